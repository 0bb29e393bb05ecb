"""format: skops (issue 9 item 6): a model file that is data, loaded with a reviewed trust list, never a pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from sluice.engine.plugin import StageFailed
from sluice.stages._model import load_model as pipeline_load
from sluice.stages.serving.model import ModelIntegrityError, load_model
from sluice.stages.sklearn_train import TrainStage
from tests.support.fixtures import model_dir  # noqa: F401  (fixture)

pytest.importorskip("skops")
ESTIMATORS = [
    "sklearn.linear_model.LogisticRegression",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.ensemble.HistGradientBoostingClassifier",
]


@pytest.fixture
def train_csv(write_csv):  # type: ignore[no-untyped-def]
    frame = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 3, -1]]
    return write_csv(frame, "train.csv"), frame


def _train(harness, source: Path, estimator: str, **extra) -> Path:  # type: ignore[no-untyped-def]
    config = {"estimator": estimator, "target": "target", "format": "skops", "preprocessing": {"impute": "median", "scale": True}, **extra}
    return harness.run(TrainStage(), config, {"train": source}, {"model": "models/model"})["model"]


def _rehash(model_dir: Path, data: bytes, name: str = "model.skops", **meta_changes: str) -> None:
    """A tamperer who can write the model directory: new bytes, and metadata.json saying they are fine."""
    (model_dir / name).write_bytes(data)
    meta = json.loads((model_dir / "metadata.json").read_text())
    meta.update({"model_file": name, "model_hash": {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}, **meta_changes})
    (model_dir / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_skops_models_are_written_and_served_without_a_pickle(harness, train_csv, estimator: str) -> None:  # type: ignore[no-untyped-def]
    source, frame = train_csv
    out = _train(harness, source, estimator)
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.skops"]
    meta = json.loads((out / "metadata.json").read_text())
    assert (meta["model_file"], meta["model_format"]) == ("model.skops", "skops")
    assert "skops" in meta["library_versions"]
    assert (out / "model.skops").read_bytes()[:4] == b"PK\x03\x04"  # a zip of JSON and arrays, not a pickle
    features = frame.drop(columns="target")
    served = load_model(out).estimator.predict(features)
    assert (served == pipeline_load(out).model.predict(features)).all()


def test_a_skops_file_naming_an_untrusted_type_is_refused_before_loading(harness, train_csv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    source, _ = train_csv
    out = _train(harness, source, ESTIMATORS[0])
    hostile = make_pipeline(FunctionTransformer(os.system))  # loading would import posix.system
    _rehash(out, sio.dumps(hostile))
    with pytest.raises(ModelIntegrityError, match=r"refusing to load the skops model: it holds types outside the trusted list: .*system"):
        load_model(out)
    with pytest.raises(StageFailed, match="outside the trusted list"):
        pipeline_load(out)


def test_the_declared_format_must_match_the_bytes(harness, train_csv, model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, _ = train_csv
    out = _train(harness, source, ESTIMATORS[0])
    pickled = tmp_path / "pickled"
    shutil.copytree(model_dir, pickled)
    _rehash(pickled, (pickled / "model.joblib").read_bytes(), "model.skops", model_format="skops")
    with pytest.raises(ModelIntegrityError, match="declares model_format 'skops', but the model file is not a skops archive"):
        load_model(pickled)
    _rehash(out, (out / "model.skops").read_bytes(), model_format="joblib")
    with pytest.raises(ModelIntegrityError, match=r"declares model_format 'joblib', but the model file is a zip archive \(skops\)"):
        load_model(out)


def test_a_model_skops_cannot_hold_fails_training_and_names_the_types(harness, train_csv) -> None:  # type: ignore[no-untyped-def]
    source, _ = train_csv
    with pytest.raises(
        StageFailed, match=r"format: skops cannot hold this model: it contains types outside the trusted list \(.*\); use format: joblib"
    ):
        _train(harness, source, "sklearn.neighbors.KNeighborsClassifier")


def test_the_server_answers_from_a_skops_model(harness, train_csv) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from sluice.stages.serving.app import create_app
    from tests.support.servers import running

    source, frame = train_csv
    out = _train(harness, source, ESTIMATORS[1], params={"n_estimators": 5, "random_state": 0})
    features = frame.drop(columns="target")
    with running(create_app(out)) as url:
        assert httpx.get(f"{url}/ready").status_code == 200
        answer = httpx.post(f"{url}/predict", json=features.head(20).to_dict(orient="records"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == pipeline_load(out).model.predict(features.head(20)).tolist()
