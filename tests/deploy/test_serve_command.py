"""`sluice serve`: the expected digest on the command line (issue 9 item 6), and the command owned
by the serving package rather than the engine (item 13)."""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "serve", *args], capture_output=True, text=True, timeout=60)


def test_serve_refuses_bytes_other_than_the_expected_digest_even_with_matching_metadata(model_dir: Path, tmp_path: Path) -> None:
    trusted = hashlib.sha256((model_dir / "model.joblib").read_bytes()).hexdigest()
    other = Path(shutil.copytree(model_dir, tmp_path / "model"))
    proc = _serve(str(other), "--expect-sha256", "0" * 64, "--port", "1")
    assert proc.returncode == 2, proc.stderr
    assert f"sha256 is {trusted}, but the expected digest is {'0' * 64}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_a_malformed_digest(model_dir: Path) -> None:
    proc = _serve(str(model_dir), "--expect-sha256", "abc")
    assert proc.returncode == 2
    assert "--expect-sha256" in proc.stderr and "64 hex digits" in proc.stderr
