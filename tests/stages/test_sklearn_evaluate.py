"""sklearn.evaluate: every figure equals scikit-learn's own call on the same predictions."""

from __future__ import annotations

import json
import shutil

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.datasets import load_diabetes, load_iris

from sluice.engine.plugin import StageFailed
from sluice.stages.sklearn_evaluate import EvaluateStage
from sluice.stages.sklearn_train import TrainStage
from tests.stages.conftest import StageHarness, config_problems

PLUGIN = EvaluateStage()
OUTPUTS = {"metrics": "metrics.json", "confusion_matrix": "cm.json", "predictions": "pred.csv"}


def _evaluate(harness, model, test, config=None, outputs=None):  # type: ignore[no-untyped-def]
    out = harness.run(PLUGIN, config or {}, {"model": model, "test": test}, outputs or OUTPUTS)
    return dict(out)


def test_binary_figures_equal_sklearn(harness, cancer_model):
    out = _evaluate(harness, cancer_model["model"], cancer_model["test"])
    scores = json.loads(out["metrics"].read_text())
    model = joblib.load(cancer_model["model"] / "model.joblib")
    test = pd.read_csv(cancer_model["test"])
    X, y = test.drop(columns="target"), test["target"].to_numpy()
    pred, proba = model.predict(X), model.predict_proba(X)
    assert scores == {
        "accuracy": m.accuracy_score(y, pred),
        "precision_weighted": m.precision_score(y, pred, average="weighted", zero_division=0),
        "recall_weighted": m.recall_score(y, pred, average="weighted", zero_division=0),
        "f1_weighted": m.f1_score(y, pred, average="weighted", zero_division=0),
        "precision_macro": m.precision_score(y, pred, average="macro", zero_division=0),
        "recall_macro": m.recall_score(y, pred, average="macro", zero_division=0),
        "f1_macro": m.f1_score(y, pred, average="macro", zero_division=0),
        "roc_auc": m.roc_auc_score(y, proba[:, 1]),
        "log_loss": m.log_loss(y, proba, labels=["benign", "malignant"]),
    }
    matrix = json.loads(out["confusion_matrix"].read_text())
    assert matrix == {"labels": ["benign", "malignant"], "matrix": m.confusion_matrix(y, pred, labels=["benign", "malignant"]).tolist()}
    rows = pd.read_csv(out["predictions"])
    assert rows["label_pred"].tolist() == pred.tolist()
    assert rows["y_true"].tolist() == [["benign", "malignant"].index(v) for v in y]
    assert np.array_equal(rows[["proba_0", "proba_1"]].to_numpy(), proba)


def test_multiclass_roc_auc_is_one_vs_rest(tmp_path):
    frame = load_iris(as_frame=True).frame
    frame.iloc[::2].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[1::2].to_csv(tmp_path / "test.csv", index=False)
    harness = StageHarness(tmp_path)
    model_dir = harness.run(
        TrainStage(),
        {"estimator": "sklearn.tree.DecisionTreeClassifier", "target": "target", "params": {"max_depth": 2, "random_state": 0}},
        {"train": tmp_path / "train.csv"},
        {"model": "model"},
    )["model"]
    scores = json.loads(_evaluate(harness, model_dir, tmp_path / "test.csv", outputs={"metrics": "m.json"})["metrics"].read_text())
    model, test = joblib.load(model_dir / "model.joblib"), frame.iloc[1::2]
    proba = model.predict_proba(test.drop(columns="target"))
    assert scores["roc_auc"] == m.roc_auc_score(test["target"], proba, multi_class="ovr", average="macro", labels=[0, 1, 2])
    assert scores["f1_macro"] == m.f1_score(test["target"], model.predict(test.drop(columns="target")), average="macro", zero_division=0)


def test_regression_figures_equal_sklearn(tmp_path):
    frame = load_diabetes(as_frame=True).frame
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[300:].to_parquet(tmp_path / "test.parquet", index=False)
    harness = StageHarness(tmp_path)
    model_dir = harness.run(
        TrainStage(), {"estimator": "sklearn.linear_model.Ridge", "target": "target"}, {"train": tmp_path / "train.csv"}, {"model": "model"}
    )["model"]
    scores = json.loads(_evaluate(harness, model_dir, tmp_path / "test.parquet", outputs={"metrics": "m.json"})["metrics"].read_text())
    test = frame.iloc[300:]
    pred = joblib.load(model_dir / "model.joblib").predict(test.drop(columns="target"))
    assert scores == {
        "rmse": m.root_mean_squared_error(test["target"], pred),
        "mae": m.mean_absolute_error(test["target"], pred),
        "r2": m.r2_score(test["target"], pred),
    }


def test_metrics_option_selects(harness, cancer_model):
    out = _evaluate(harness, cancer_model["model"], cancer_model["test"], {"metrics": ["accuracy", "roc_auc"]}, {"metrics": "m.json"})
    assert list(json.loads(out["metrics"].read_text())) == ["accuracy", "roc_auc"]


def test_regression_metric_on_a_classifier_fails(harness, cancer_model):
    with pytest.raises(StageFailed, match="rmse do not apply to this classification model"):
        PLUGIN.run(
            harness.context({"metrics": ["rmse"]}, {"model": cancer_model["model"], "test": cancer_model["test"]}, {"metrics": "m.json"})
        )


def test_bad_config():
    assert any("is not one of" in p for p in config_problems(PLUGIN, {"metrics": ["auc"]}))


def test_missing_feature_column(harness, cancer_model, tmp_path):
    test = pd.read_csv(cancer_model["test"]).drop(columns="mean radius")
    test.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageFailed, match="test table lacks 1 required column") as failure:
        PLUGIN.run(harness.context({}, {"model": cancer_model["model"], "test": tmp_path / "t.csv"}, {"metrics": "m.json"}))
    assert "mean radius" in failure.value.details


def test_wrong_feature_dtype(harness, cancer_model, tmp_path):
    test = pd.read_csv(cancer_model["test"])
    test["mean radius"] = "big"
    test.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageFailed, match="differ in type from training") as failure:
        PLUGIN.run(harness.context({}, {"model": cancer_model["model"], "test": tmp_path / "t.csv"}, {"metrics": "m.json"}))
    assert "mean radius" in failure.value.details and "string" in failure.value.details


def test_unknown_label_in_test_set(harness, cancer_model, tmp_path):
    test = pd.read_csv(cancer_model["test"])
    test.loc[0, "target"] = "unsure"
    test.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageFailed, match="cannot score the model"):
        PLUGIN.run(harness.context({}, {"model": cancer_model["model"], "test": tmp_path / "t.csv"}, {"metrics": "m.json"}))


def test_empty_test_table(harness, cancer_model, tmp_path):
    pd.read_csv(cancer_model["test"]).iloc[:0].to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageFailed, match="has no rows"):
        PLUGIN.run(harness.context({}, {"model": cancer_model["model"], "test": tmp_path / "t.csv"}, {"metrics": "m.json"}))


def test_tampered_model_file_is_refused(harness, cancer_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(cancer_model["model"], copy)
    with (copy / "model.joblib").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(StageFailed, match="does not match the sha256"):
        PLUGIN.run(harness.context({}, {"model": copy, "test": cancer_model["test"]}, {"metrics": "m.json"}))


def test_not_a_model_directory(harness, cancer_model, tmp_path):
    with pytest.raises(StageFailed, match="not a model directory"):
        PLUGIN.run(harness.context({}, {"model": tmp_path, "test": cancer_model["test"]}, {"metrics": "m.json"}))


def _strict(path):  # type: ignore[no-untyped-def]
    """The file as strict JSON: NaN and Infinity are not JSON, and a strict reader refuses them."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_single_class_test_set_writes_null_with_a_reason(harness, cancer_model, tmp_path):
    test = pd.read_csv(cancer_model["test"])
    test[test["target"] == "benign"].to_csv(tmp_path / "t.csv", index=False)
    out = _evaluate(harness, cancer_model["model"], tmp_path / "t.csv", outputs={"metrics": "m.json"})
    scores = _strict(out["metrics"])
    assert scores["roc_auc"] is None
    assert scores["undefined"] == {"roc_auc": "only one class in y_true (benign)"}
    assert isinstance(scores["accuracy"], float) and isinstance(scores["log_loss"], float)


def test_decision_function_gives_roc_auc_when_there_is_no_predict_proba(tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.iloc[::2].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[1::2].to_csv(tmp_path / "test.csv", index=False)
    harness = StageHarness(tmp_path)
    config = {"estimator": "sklearn.svm.LinearSVC", "target": "target", "preprocessing": {"scale": True}}
    model_dir = harness.run(TrainStage(), config, {"train": tmp_path / "train.csv"}, {"model": "model"})["model"]
    out = _evaluate(harness, model_dir, tmp_path / "test.csv", outputs={"metrics": "m.json", "predictions": "p.csv"})
    scores = _strict(out["metrics"])
    model, test = joblib.load(model_dir / "model.joblib"), frame.iloc[1::2]
    decision = model.decision_function(test.drop(columns="target"))
    assert scores["roc_auc"] == m.roc_auc_score(test["target"], decision)
    assert "log_loss" not in scores  # needs probabilities, which this model does not give
    assert np.allclose(pd.read_csv(out["predictions"])["score"].to_numpy(), decision, rtol=1e-12, atol=0)


def test_predictions_carry_a_row_key_that_follows_the_row(harness, cancer_model, tmp_path):
    """model.gate pairs two models' predictions by row_key: reordering the test table keeps each row's key."""
    test = pd.read_csv(cancer_model["test"])
    test = pd.concat([test, test.iloc[:2]])  # duplicate rows still get distinct keys
    test.to_csv(tmp_path / "a.csv", index=False)
    test.iloc[::-1].to_csv(tmp_path / "b.csv", index=False)
    a = pd.read_csv(
        _evaluate(harness, cancer_model["model"], tmp_path / "a.csv", outputs={"metrics": "ma.json", "predictions": "a.csv"})["predictions"]
    )
    b = pd.read_csv(
        _evaluate(harness, cancer_model["model"], tmp_path / "b.csv", outputs={"metrics": "mb.json", "predictions": "b.csv"})["predictions"]
    )
    assert a["row_key"].is_unique and set(a["row_key"]) == set(b["row_key"])
    merged = a.merge(b, on="row_key")
    assert len(merged) == len(a) and np.allclose(merged["proba_1_x"], merged["proba_1_y"], rtol=1e-9)
