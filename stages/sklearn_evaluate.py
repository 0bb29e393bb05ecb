"""sklearn.evaluate: scores a model directory on a test table; metrics equal scikit-learn's own functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import Plugin, Port, StageContext, StageFailed
from sluice.stages import _metrics
from sluice.stages._accepted import write_strict_json
from sluice.stages._model import LoadedModel, load_model
from sluice.stages._tables import input_anchor, input_path, output_path, read_table, require_columns, write_table

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class EvaluateStage(Plugin):
    name = "sklearn.evaluate"
    version = "1"
    config_schema = schemas.load("stages/sklearn.evaluate")
    inputs = (Port("model", desc="a model directory from sklearn.train"), Port("test", desc="the test table"))
    outputs = (
        Port("metrics", desc="JSON metrics"),
        Port("confusion_matrix", required=False, desc="JSON confusion matrix (classifiers)"),
        Port("predictions", required=False, desc="per-row predictions table"),
    )

    def run(self, ctx: StageContext) -> None:
        loaded = load_model(input_path(ctx, "model"), input_anchor(ctx, "model"))
        frame = read_table(input_path(ctx, "test"), "test")
        target = loaded.metadata["target"]
        require_columns(frame, [target], "test")
        if frame[target].isna().any():
            raise StageFailed(f"target column '{target}' of the test table has {int(frame[target].isna().sum())} null value(s)")
        y_true = frame[target].to_numpy()
        y_pred, proba, scores = predict(loaded, frame, "test")
        labels = loaded.metadata.get("classes") or []
        usable = _metrics.available(loaded.task, proba is not None, scores is not None)
        names = ctx.config.get("metrics") or usable
        wrong = [n for n in names if n not in usable]
        if wrong:
            raise StageFailed(f"metric(s) {', '.join(wrong)} do not apply to this {loaded.task} model")
        try:
            results = {name: _metrics.score(name, y_true, y_pred, proba, labels, scores) for name in names}
        except ValueError as exc:  # e.g. test labels the model never saw, which log_loss refuses
            raise StageFailed(f"cannot score the model on this test table: {exc}") from None
        values: dict[str, Any] = {name: value for name, (value, _) in results.items()}
        undefined = {name: reason for name, (_, reason) in results.items() if reason is not None}
        write_strict_json(output_path(ctx, "metrics"), {**values, "undefined": undefined} if undefined else values)
        if "confusion_matrix" in ctx.outputs:
            if loaded.task != "classification":
                raise StageFailed("a confusion matrix needs a classification model")
            write_strict_json(output_path(ctx, "confusion_matrix"), confusion(y_true, y_pred, labels))
        if "predictions" in ctx.outputs:
            frame_rows = predictions_frame(y_true, y_pred, proba, labels, scores)
            frame_rows.insert(0, "row_key", row_keys(frame[[*loaded.features, target]]))
            write_table(output_path(ctx, "predictions"), frame_rows)
        ctx.log.info("%s", ", ".join(f"{k}={v:.4g}" if v is not None else f"{k}=undefined ({undefined[k]})" for k, v in values.items()))


def predict(loaded: LoadedModel, frame: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Predictions; class probabilities when a classifier provides them; else a binary classifier's decision scores."""
    features = loaded.feature_frame(frame, what)
    classifier = loaded.task == "classification"
    proba = scores = None
    try:
        y_pred = loaded.model.predict(features)
        if classifier and hasattr(loaded.model, "predict_proba"):
            proba = loaded.model.predict_proba(features)
        elif classifier and hasattr(loaded.model, "decision_function"):
            decision = loaded.model.decision_function(features)
            # Multiclass decision scores are not probabilities, which one-vs-rest ROC AUC needs.
            scores = decision if decision.ndim == 1 else None
    except (ValueError, TypeError) as exc:  # values the fitted preprocessing cannot take
        raise StageFailed(f"the model cannot predict on the {what} table: {exc}") from None
    return y_pred, proba, scores


def row_keys(frame: pd.DataFrame) -> list[str]:
    """A digest of each test row's content (plus its occurrence, for duplicate rows).

    model.gate pairs the accepted model's predictions with a candidate's by this key, so a
    reordered or partly refreshed test table still compares each row with itself.
    """
    import pandas as pd

    digests = pd.util.hash_pandas_object(frame, index=False)
    occurrence = digests.groupby(digests.to_numpy()).cumcount()
    return [f"{d:016x}-{o}" for d, o in zip(digests.tolist(), occurrence.tolist(), strict=True)]


def confusion(y_true: Any, y_pred: Any, labels: list[Any]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    return {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


def predictions_frame(
    y_true: Any, y_pred: Any, proba: np.ndarray | None, labels: list[Any], scores: np.ndarray | None = None
) -> pd.DataFrame:
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
    if scores is not None:
        columns["score"] = scores  # decision_function: higher means the second class
    return pd.DataFrame(columns)
