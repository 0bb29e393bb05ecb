"""Issue 9: a model file is data you produced, and the server survives what clients send."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.stages.serving.model import ModelIntegrityError, load_model

# -- 6. model file trust ---------------------------------------------------------------------


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _claimed(model_dir: Path) -> str:
    return str(json.loads((model_dir / "metadata.json").read_text())["model_hash"]["value"])


def _retrain_in_place(victim: Path, tmp_path: Path) -> None:
    """The attacker's move: another pickle in place of the model, and its hash in metadata.json."""
    from tests.support.models import write_model_dir

    evil = write_model_dir(tmp_path / "evil", c=1e-4)
    shutil.copy(evil / "model.joblib", victim / "model.joblib")
    shutil.copy(evil / "metadata.json", victim / "metadata.json")


def test_an_expected_digest_beats_a_rewritten_metadata_hash(model_dir: Path, tmp_path: Path) -> None:
    victim = _copy(model_dir, tmp_path)
    genuine = _claimed(model_dir)
    _retrain_in_place(victim, tmp_path)
    load_model(victim)  # metadata alone cannot tell: it was rewritten together with the model
    with pytest.raises(ModelIntegrityError, match=f"but the expected digest is {genuine}"):
        load_model(victim, expected_sha256=genuine)
    assert load_model(model_dir, expected_sha256=genuine.upper()).metadata.model_hash == genuine


def test_server_refuses_to_start_on_a_digest_mismatch(model_dir: Path, tmp_path: Path) -> None:
    victim = _copy(model_dir, tmp_path)
    genuine = _claimed(model_dir)
    _retrain_in_place(victim, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.stages.serving", str(victim), "--expect-sha256", genuine],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert f"but the expected digest is {genuine}" in proc.stderr


@pytest.mark.parametrize(
    ("model_file", "fragment"),
    [
        ("/etc/passwd", "must be a file name inside the model directory"),
        ("../model.joblib", "must be a file name inside the model directory"),
        ("link.joblib", "leads outside the model directory"),
    ],
    ids=["absolute", "dot-dot", "symlink-out"],
)
def test_model_file_is_confined_to_the_model_directory(model_dir: Path, tmp_path: Path, model_file: str, fragment: str) -> None:
    victim = _copy(model_dir, tmp_path)
    outside = tmp_path / "model.joblib"
    shutil.copy(victim / "model.joblib", outside)
    (victim / "link.joblib").symlink_to(outside)
    meta = json.loads((victim / "metadata.json").read_text())
    (victim / "metadata.json").write_text(json.dumps({**meta, "model_file": model_file}))
    with pytest.raises(ModelIntegrityError, match=fragment):
        load_model(victim)


def test_pipeline_loader_is_confined_too(model_dir: Path, tmp_path: Path) -> None:
    from sluice.engine.plugin import StageFailed
    from sluice.stages._model import load_model as pipeline_load

    victim = _copy(model_dir, tmp_path)
    meta = json.loads((victim / "metadata.json").read_text())
    (victim / "metadata.json").write_text(json.dumps({**meta, "model_file": "../model.joblib"}))
    with pytest.raises(StageFailed, match="must be a file name inside the model directory"):
        pipeline_load(victim)


def test_serve_smoke_takes_an_expected_digest(model_dir: Path, sample_table: Path, tmp_path: Path) -> None:
    from sluice.engine.plugin import StageFailed
    from sluice.stages.serve_smoke import SmokeStage
    from tests.support.context import make_ctx

    victim = _copy(model_dir, tmp_path)
    genuine = _claimed(model_dir)
    _retrain_in_place(victim, tmp_path)
    ctx = make_ctx(tmp_path, {"rows": 5, "expect_sha256": genuine}, {"model": victim, "data": sample_table}, {"report": "smoke.json"})
    with pytest.raises(StageFailed, match="but the expected digest is"):
        SmokeStage().run(ctx)
