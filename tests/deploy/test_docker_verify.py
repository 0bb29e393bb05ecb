"""Issue 9 item 6: docker.build verifies the model bytes before they enter the build context and
anchors the verified digest in the image (no Docker engine needed: DOCKER_HOST points nowhere)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages.docker_build import DockerBuildStage
from tests.support.context import make_ctx


@pytest.fixture
def no_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody-listens.sock")


def _build(tmp_path: Path, model: Path, **config: object) -> Path:
    ctx = make_ctx(
        tmp_path, {"wheelhouse": False, **config}, {"model": model}, {"image": "image.json", "context": "context"}, pipeline="bc"
    )
    DockerBuildStage().run(ctx)
    return ctx.outputs["context"]


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def test_a_model_file_that_does_not_match_its_hash_never_reaches_the_context(model_dir: Path, tmp_path: Path, no_daemon: None) -> None:
    model = _copy(model_dir, tmp_path)
    with (model / "model.joblib").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(StageFailed, match=r"refusing to serve .*model\.joblib: sha256 is [0-9a-f]{64}, but metadata\.json records"):
        _build(tmp_path, model)
    assert not (tmp_path / "out" / "context" / "srv" / "model" / "model.joblib").exists()


def test_a_rewritten_metadata_hash_loses_to_the_expected_digest(model_dir: Path, tmp_path: Path, no_daemon: None) -> None:
    trusted = json.loads((model_dir / "metadata.json").read_text())["model_hash"]["value"]
    model = _copy(model_dir, tmp_path)
    (model / "model.joblib").write_bytes(b"not the trained model")
    meta = json.loads((model / "metadata.json").read_text())
    meta["model_hash"]["value"] = hashlib.sha256(b"not the trained model").hexdigest()  # the attacker rewrote both
    (model / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(StageFailed, match=f"but the expected digest is {trusted}"):
        _build(tmp_path, model, expect_sha256=trusted)
