"""sklearn.train: the model directory contract, preprocessing, search, and config errors before running."""

from __future__ import annotations

import hashlib
import json

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from sluice.engine.plugin import StageFailed
from sluice.stages.sklearn_train import TrainStage
from tests.stages.conftest import config_problems

PLUGIN = TrainStage()
LOGREG = "sklearn.linear_model.LogisticRegression"


@pytest.fixture
def cancer() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 3, -1]]
    return frame.assign(target=frame["target"].map({0: "malignant", 1: "benign"}))


def _train(harness, write_csv, frame, **config):  # type: ignore[no-untyped-def]
    source = write_csv(frame, "train.csv")
    out = harness.run(PLUGIN, config, {"train": source}, {"model": "models/model"})["model"]
    return out, json.loads((out / "metadata.json").read_text()), source


def test_model_directory_follows_the_contract(harness, write_csv, cancer):
    out, meta, source = _train(harness, write_csv, cancer, estimator=LOGREG, target="target", params={"max_iter": 500})
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.joblib"]
    assert set(meta) == {
        "format",
        "estimator",
        "task",
        "target",
        "features",
        "classes",
        "model_file",
        "model_format",
        "model_hash",
        "data_hash",
        "library_versions",
        "params",
        "best_params",
        "cv_score",
    }
    assert (meta["format"], meta["estimator"], meta["task"], meta["target"]) == (1, LOGREG, "classification", "target")
    assert meta["features"] == [{"name": c, "dtype": "float64"} for c in cancer.columns[:4]]
    assert meta["classes"] == ["benign", "malignant"]
    assert (meta["model_file"], meta["model_format"]) == ("model.joblib", "joblib")
    assert meta["model_hash"] == {"algorithm": "sha256", "value": hashlib.sha256((out / "model.joblib").read_bytes()).hexdigest()}
    assert meta["data_hash"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert set(meta["library_versions"]) == {"python", "scikit-learn", "numpy", "pandas", "scipy", "joblib"}
    assert (meta["params"], meta["best_params"], meta["cv_score"]) == ({"max_iter": 500}, None, None)
    model = joblib.load(out / "model.joblib")
    shuffled = cancer[list(reversed(cancer.columns[:4]))]  # raw columns, any order: selection is by name
    assert model.predict(shuffled).tolist() == model.predict(cancer.iloc[:, :4]).tolist()


def test_regression_task_and_classes_null(harness, write_csv):
    frame = load_diabetes(as_frame=True).frame
    _, meta, _ = _train(harness, write_csv, frame, estimator="sklearn.linear_model.Ridge", target="target")
    assert (meta["task"], meta["classes"]) == ("regression", None)


def test_features_and_exclude(harness, write_csv, cancer):
    _, meta, _ = _train(harness, write_csv, cancer, estimator=LOGREG, target="target", features=["mean texture", "mean radius"])
    assert [f["name"] for f in meta["features"]] == ["mean texture", "mean radius"]
    _, meta, _ = _train(harness, write_csv, cancer, estimator=LOGREG, target="target", exclude=["mean area"])
    assert "mean area" not in [f["name"] for f in meta["features"]]


def test_preprocessing_scales_one_hot_encodes_and_imputes(harness, write_csv, cancer):
    frame = cancer.assign(site=np.where(np.arange(len(cancer)) % 3, "north", "south"))
    frame.loc[::10, "mean radius"] = np.nan
    config = {"estimator": LOGREG, "target": "target", "preprocessing": {"scale": True, "impute": "median"}}
    out, meta, _ = _train(harness, write_csv, frame, **config)
    model = joblib.load(out / "model.joblib")
    steps = model.named_steps["preprocess"].named_transformers_
    assert type(steps["numeric"].steps[-1][1]).__name__ == "StandardScaler"
    assert type(steps["categorical"].steps[-1][1]).__name__ == "OneHotEncoder"
    unseen = frame.iloc[:3].assign(site="east")  # categories unseen in training are ignored, not fatal
    assert len(model.predict(unseen)) == 3
    assert {"name": "site", "dtype": str(frame["site"].dtype)} in meta["features"]


def test_grid_search_records_best_params_and_cv_score(harness, write_csv, cancer):
    search = {"kind": "grid", "grid": {"C": [0.001, 1.0]}, "cv": 3, "scoring": "accuracy"}
    out, meta, _ = _train(harness, write_csv, cancer, estimator=LOGREG, target="target", params={"max_iter": 1000}, search=search)
    assert meta["best_params"] == {"C": 1.0}
    assert 0.5 < meta["cv_score"] <= 1.0
    assert joblib.load(out / "model.joblib").named_steps["estimator"].C == 1.0


def test_random_search_with_a_distribution(harness, write_csv, cancer):
    search = {"kind": "random", "grid": {"C": {"distribution": "loguniform", "low": 0.01, "high": 10}}, "n_iter": 3, "cv": 3}
    _, meta, _ = _train(harness, write_csv, cancer, estimator=LOGREG, target="target", params={"max_iter": 1000}, search=search)
    assert 0.01 <= meta["best_params"]["C"] <= 10 and isinstance(meta["cv_score"], float)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"estimator": "sklearn.linear_model.LogisticRegresion"}, "did you mean 'sklearn.linear_model.LogisticRegression'"),
        ({"estimator": "sklearn.linear_modle.LogisticRegression"}, "did you mean 'sklearn.linear_model.LogisticRegression'"),
        ({"estimator": "sklern.ensemble.RandomForestClassifier"}, "did you mean 'sklearn.ensemble.RandomForestClassifier'"),
        ({"estimator": "sklearn.utils.shuffle"}, "is not a scikit-learn estimator class"),
        ({"estimator": "os.path.join"}, "is not under an allowed module (sklearn)"),
        ({"params": {"max_iters": 10}}, "params.max_iters: unknown estimator param 'max_iters' (did you mean 'max_iter'?)"),
        ({"params": {"C": -1.0}}, "The 'C' parameter of LogisticRegression must be"),
        ({"search": {"kind": "grid", "grid": {"c": [1]}}}, "search.grid.c: unknown estimator param 'c' (did you mean 'C'?)"),
        ({"search": {"kind": "grid", "grid": {"C": [1]}, "scoring": "roc_aoc"}}, "did you mean 'roc_auc'"),
        ({"search": {"kind": "grid", "grid": {"C": {"distribution": "uniform", "low": 0, "high": 1}}}}, "needs a list of values"),
        ({"search": {"kind": "grid", "grid": {"C": [1]}, "n_iter": 3}}, "n_iter applies to a random search only"),
        ({"task": "regression"}, "the estimator is a classifier"),
        ({"features": ["target"]}, "also listed as a feature"),
        ({"estimator": "LogisticRegression"}, "does not match"),
    ],
)
def test_bad_config_is_caught_before_training(config, message):
    problems = config_problems(PLUGIN, {"estimator": LOGREG, "target": "target", **config})
    assert any(message in p for p in problems), problems


def test_missing_target_column(harness, write_csv, cancer):
    with pytest.raises(StageFailed, match="lacks 1 required column"):
        PLUGIN.run(harness.context({"estimator": LOGREG, "target": "diagnosis"}, {"train": write_csv(cancer)}, {"model": "m"}))


def test_unusable_feature_dtype(harness, write_csv, cancer):
    frame = cancer.assign(when=pd.Timestamp("2024-01-01"))
    with pytest.raises(StageFailed, match="numeric or categorical; these are not: when"):
        PLUGIN.run(harness.context({"estimator": LOGREG, "target": "target"}, {"train": write_csv(frame, "t.parquet")}, {"model": "m"}))


def test_nulls_without_impute_fail_cleanly(harness, write_csv, cancer):
    frame = cancer.copy()
    frame.loc[0, "mean radius"] = np.nan
    with pytest.raises(StageFailed, match=r"training failed: .*NaN"):
        PLUGIN.run(harness.context({"estimator": LOGREG, "target": "target"}, {"train": write_csv(frame)}, {"model": "m"}))


def test_null_target_fails_cleanly(harness, write_csv, cancer):
    frame = cancer.astype({"target": object})
    frame.loc[3, "target"] = None
    with pytest.raises(StageFailed, match="target column 'target' has 1 null"):
        PLUGIN.run(harness.context({"estimator": LOGREG, "target": "target"}, {"train": write_csv(frame)}, {"model": "m"}))


def test_text_target_for_a_regressor_fails_cleanly(harness, write_csv, cancer):
    with pytest.raises(StageFailed, match="training failed"):
        PLUGIN.run(
            harness.context({"estimator": "sklearn.linear_model.Ridge", "target": "target"}, {"train": write_csv(cancer)}, {"model": "m"})
        )


def test_empty_table(harness, write_csv, cancer):
    with pytest.raises(StageFailed, match="has no rows"):
        PLUGIN.run(harness.context({"estimator": LOGREG, "target": "target"}, {"train": write_csv(cancer.iloc[:0])}, {"model": "m"}))
