"""`sluice serve`: the expected digest on the command line (issue 9 item 6), and the command owned
by the serving package rather than the engine (item 13)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.imports import imported_modules

REPO = Path(__file__).resolve().parents[2]


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice", "serve", *args], capture_output=True, text=True, timeout=60, check=False)


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


def test_the_engine_imports_no_built_in_stage_module() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line} {name}"
        for path in sorted((REPO / "engine").rglob("*.py"))
        for line, name in imported_modules(path, dynamic=True)
        if name.split(".")[:2] == ["sluice", "stages"]
    ]
    assert offenders == []


def test_serve_is_registered_as_a_command_plugin() -> None:
    from importlib.metadata import entry_points

    assert {ep.name: ep.value for ep in entry_points(group="sluice.commands")}.get("serve") == "sluice.stages.serving:command"


def test_other_commands_do_not_import_the_serving_package(tmp_path: Path) -> None:
    """A guard for the lazy discovery (it passed before too: api.serve imported lazily)."""
    code = (
        "import sys; from sluice.engine.cli import main; main(['validate', 'missing.yaml']); print('sluice.stages.serving' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr
