"""sklearn.evaluate: scores a model directory on a test table; metrics equal scikit-learn's own functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import schemas
from engine.plugin import Plugin, StageContext, StageFailed, write_json
from stages import _metrics
from stages._model import LoadedModel, load_model
from stages._tables import input_path, output_path, read_table, require_columns, write_table

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class EvaluateStage(Plugin):
    name = "sklearn.evaluate"
    version = "1"
    config_schema = schemas.load("stages/sklearn.evaluate")

    def run(self, ctx: StageContext) -> None:
        loaded = load_model(input_path(ctx, "model"))
        frame = read_table(input_path(ctx, "test"), "test")
        target = loaded.metadata["target"]
        require_columns(frame, [target], "test")
        if frame[target].isna().any():
            raise StageFailed(f"target column '{target}' of the test table has {int(frame[target].isna().sum())} null value(s)")
        y_true = frame[target].to_numpy()
        y_pred, proba = predict(loaded, frame, "test")
        labels = loaded.metadata.get("classes") or []
        names = ctx.config.get("metrics") or _metrics.available(loaded.task, proba is not None)
        wrong = [n for n in names if n not in _metrics.available(loaded.task, proba is not None)]
        if wrong:
            raise StageFailed(f"metric(s) {', '.join(wrong)} do not apply to this {loaded.task} model")
        try:
            scores = {name: _metrics.metric(name, y_true, y_pred, proba, labels) for name in names}
        except ValueError as exc:  # e.g. test labels the model never saw, which log_loss refuses
            raise StageFailed(f"cannot score the model on this test table: {exc}") from None
        write_json(output_path(ctx, "metrics"), scores)
        if "confusion_matrix" in ctx.outputs:
            if loaded.task != "classification":
                raise StageFailed("a confusion matrix needs a classification model")
            write_json(output_path(ctx, "confusion_matrix"), confusion(y_true, y_pred, labels))
        if "predictions" in ctx.outputs:
            write_table(output_path(ctx, "predictions"), predictions_frame(y_true, y_pred, proba, labels))
        ctx.log.info("%s", ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))


def predict(loaded: LoadedModel, frame: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions, and class probabilities when a classifier provides them."""
    features = loaded.feature_frame(frame, what)
    try:
        y_pred = loaded.model.predict(features)
        has_proba = loaded.task == "classification" and hasattr(loaded.model, "predict_proba")
        proba = loaded.model.predict_proba(features) if has_proba else None
    except (ValueError, TypeError) as exc:  # values the fitted preprocessing cannot take
        raise StageFailed(f"the model cannot predict on the {what} table: {exc}") from None
    return y_pred, proba


def confusion(y_true: Any, y_pred: Any, labels: list[Any]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    return {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


def predictions_frame(y_true: Any, y_pred: Any, proba: np.ndarray | None, labels: list[Any]) -> pd.DataFrame:
    """Per-row truth and prediction for model.gate's bootstrap.

    Classes are stored as their index in `labels` (plus the labels themselves for people), so
    a CSV round trip cannot turn the label 1 into "1"; every metric we compute is unchanged by
    renaming classes consistently.
    """
    import pandas as pd

    if not labels:
        return pd.DataFrame({"y_true": y_true, "y_pred": y_pred})
    index = {label: i for i, label in enumerate(labels)}
    columns: dict[str, Any] = {
        "label_true": y_true,
        "label_pred": y_pred,
        "y_true": [index.get(v, -1) for v in y_true.tolist()],
        "y_pred": [index[v] for v in y_pred.tolist()],
    }
    if proba is not None:
        columns.update({f"proba_{i}": proba[:, i] for i in range(proba.shape[1])})
    return pd.DataFrame(columns)
