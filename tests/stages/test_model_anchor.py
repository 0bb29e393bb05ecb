"""Issue 9 item 6: a pipeline stage checks the model bytes it reads against the digest the ENGINE
took when it decided to run the stage, which a consistent rewrite of model + metadata.json cannot fake."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import blake3
import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages import _model
from sluice.stages.docker_build import DockerBuildStage
from sluice.stages.serving import model as serving
from tests.conftest import Workspace
from tests.support.context import make_ctx
from tests.support.fixtures import model_dir, sample_table  # noqa: F401  (fixtures)

CHANGED = r"refusing to load .*model\.joblib: it changed since sluice hashed it for this run"


class _Payload:
    """Unpickling it runs code: writes the file it names. What a swapped-in model could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def anchor_of(directory: Path) -> dict[str, str]:
    """What the engine records for a model directory input: path inside it → BLAKE3 of its bytes."""
    return {p.relative_to(directory).as_posix(): blake3.blake3(p.read_bytes()).hexdigest() for p in directory.rglob("*") if p.is_file()}


def rewrite_consistently(directory: Path, marker: Path) -> None:
    """Swap in a code-running pickle and record its sha256 in metadata.json: the metadata check passes."""
    data = pickle.dumps(_Payload(marker))
    (directory / "model.joblib").write_bytes(data)
    meta = json.loads((directory / "metadata.json").read_text())
    meta["model_hash"]["value"] = hashlib.sha256(data).hexdigest()
    (directory / "metadata.json").write_text(json.dumps(meta))


def _load_pipeline(directory: Path, anchor: dict[str, str]) -> object:
    return _model.load_model(directory, anchor)


def _load_serving(directory: Path, anchor: dict[str, str]) -> object:
    try:
        return serving.load_model(directory, anchor=anchor)
    except serving.ModelError as exc:
        raise StageFailed(str(exc)) from exc


def _docker_build(directory: Path, anchor: dict[str, str]) -> object:
    ws = directory.parent
    ctx = make_ctx(ws, {"wheelhouse": False}, {"model": directory}, {"image": "image.json", "context": "context"}, pipeline="bc")
    try:
        DockerBuildStage().run(replace(ctx, input_digests={"model": anchor}))
    except StageFailed as exc:
        if "no Docker daemon reachable" not in str(exc):  # the context is written before the daemon is asked
            raise
    return ctx.outputs["context"]


LOADERS = {"load_model (gate, evaluate, benchmark)": _load_pipeline, "serving (serve.smoke)": _load_serving, "docker.build": _docker_build}


@pytest.fixture
def no_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody-listens.sock")


@pytest.mark.parametrize("load", LOADERS.values(), ids=list(LOADERS))
def test_a_consistent_rewrite_is_refused_when_the_engine_hashed_other_bytes(load, model_dir: Path, tmp_path: Path, no_daemon: None) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    model = Path(shutil.copytree(model_dir, tmp_path / "model"))
    anchor = anchor_of(model)
    marker = tmp_path / "payload-ran"
    rewrite_consistently(model, marker)
    with pytest.raises(StageFailed, match=r"refusing to load .*metadata\.json: it changed since sluice hashed it for this run"):
        load(model, anchor)
    # Only the model file moved (metadata.json as hashed): still refused, before any unpickling.
    model.joinpath("metadata.json").write_bytes(model_dir.joinpath("metadata.json").read_bytes())
    meta_only = {**anchor_of(model), "model.joblib": anchor["model.joblib"]}
    with pytest.raises(StageFailed, match=CHANGED):
        load(model, meta_only)
    assert not marker.exists()
    assert not (tmp_path / "out" / "context" / "srv" / "model" / "model.joblib").exists()


@pytest.mark.parametrize("load", LOADERS.values(), ids=list(LOADERS))
def test_a_model_matching_the_engine_digest_loads(load, model_dir: Path, tmp_path: Path, no_daemon: None) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    model = Path(shutil.copytree(model_dir, tmp_path / "model"))
    assert load(model, anchor_of(model)) is not None
    assert load(model, {}) is not None  # no anchor (rollback, a direct call): the metadata check alone, as before


def test_a_model_file_the_engine_never_saw_is_refused(model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    model = Path(shutil.copytree(model_dir, tmp_path / "model"))
    anchor = {k: v for k, v in anchor_of(model).items() if k != "model.joblib"}
    with pytest.raises(StageFailed, match=r"model\.joblib: it was not in the model directory when sluice hashed it for this run"):
        _model.load_model(model, anchor)


TAMPER = f"""\
import hashlib, json, pickle, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.stages.test_model_anchor import rewrite_consistently
from pathlib import Path
rewrite_consistently(Path("model"), Path("payload-ran").resolve())
Path(sys.argv[1]).write_text("done")
"""


def test_the_engine_digest_reaches_the_stage_and_refuses_a_model_rewritten_after_hashing(
    ws: Workspace,
    model_dir: Path,  # noqa: F811
    sample_table: Path,  # noqa: F811
) -> None:
    """`a_tamper` runs first (-j 1) and rewrites the model directory consistently; `b_evaluate` was
    decided (and its input hashed) before that, in the plan: it must refuse what it now finds."""
    shutil.copytree(model_dir, ws.root / "model")
    shutil.copyfile(sample_table, ws.root / "test.csv")
    ws.write("tamper.py", TAMPER)
    ws.write(
        "pipeline.yaml",
        f"""\
        version: 1
        name: anchor
        stages:
          a_tamper:
            cmd: {sys.executable} tamper.py ${{outputs.done}}
            outputs: {{done: tampered.txt}}
          b_evaluate:
            uses: sklearn.evaluate
            inputs: {{model: model, test: test.csv}}
            outputs: {{metrics: metrics.json}}
        """,
    )
    res = ws.sluice("run", "-j", "1")
    assert res.code == 1, res.out + res.err
    assert (ws.root / "tampered.txt").exists()
    assert "b_evaluate" in res.out
    assert "model/metadata.json: it changed since sluice hashed it for this run" in res.out + res.err
    assert not (ws.root / "payload-ran").exists()  # the swapped-in pickle never ran
    assert not (ws.root / "metrics.json").exists()
