"""The headline: a fresh copy of the example workspace, the remote configured and an empty .sluice,
runs with every stage restored and none run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.remote.conftest import S3Server, remotes_yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "breast-cancer"
_GENERATED = shutil.ignore_patterns(".sluice", "data", "models", "reports", "sluice.lock")


def _run(workspace: Path) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "run", "--json", "--remote", "team"], capture_output=True, text=True, cwd=workspace, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: stage["outcome"] for name, stage in json.loads(proc.stdout)["stages"].items()}


def test_a_fresh_copy_of_the_example_restores_every_stage_from_the_remote(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    laptop = tmp_path / "laptop" / "breast-cancer"
    shutil.copytree(EXAMPLE, laptop, ignore=_GENERATED)
    (laptop / "sluice.remotes.yaml").write_text(remotes_yaml(url, seaweed.endpoint))
    first = _run(laptop)
    assert set(first.values()) == {"ran"}
    ci = tmp_path / "ci" / "breast-cancer"  # a fresh clone: the committed files, the lock among them
    shutil.copytree(laptop, ci, ignore=shutil.ignore_patterns(".sluice", "data", "models", "reports"))
    assert _run(ci) == dict.fromkeys(first, "restored")
    assert (ci / "models" / "model" / "metadata.json").read_bytes() == (laptop / "models" / "model" / "metadata.json").read_bytes()
