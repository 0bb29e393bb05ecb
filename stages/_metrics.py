"""Metric definitions shared by sklearn.evaluate (on the test set) and model.gate (on bootstrap resamples).

One definition serves both so a gate's confidence interval is about exactly the figure evaluate reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CLASSIFICATION = (
    "accuracy",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",  # binary: the positive class is the second of the sorted classes; multiclass: one-vs-rest, macro
    "log_loss",
)
NEEDS_PROBA = frozenset({"roc_auc", "log_loss"})
REGRESSION = ("rmse", "mae", "r2")
ALL = CLASSIFICATION + REGRESSION
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


def metric(name: str, y_true: Any, y_pred: Any, proba: np.ndarray | None, labels: Sequence[Any]) -> float:
    """One metric, computed exactly as the named scikit-learn function computes it.

    `labels` are the model's classes in `proba` column order (empty for regression).
    """
    from sklearn import metrics as m

    if name == "accuracy":
        return float(m.accuracy_score(y_true, y_pred))
    if name.startswith(("precision_", "recall_", "f1_")):
        kind, average = name.split("_")
        score = {"precision": m.precision_score, "recall": m.recall_score, "f1": m.f1_score}[kind]
        return float(score(y_true, y_pred, average=average, zero_division=0))
    if name == "roc_auc":
        if proba is None:
            raise ValueError("roc_auc needs predicted probabilities")
        if proba.shape[1] == 2:
            return float(m.roc_auc_score(y_true, proba[:, 1]))
        return float(m.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(labels)))
    if name == "log_loss":
        if proba is None:
            raise ValueError("log_loss needs predicted probabilities")
        return float(m.log_loss(y_true, proba, labels=list(labels)))
    if name == "rmse":
        return float(m.root_mean_squared_error(y_true, y_pred))
    if name == "mae":
        return float(m.mean_absolute_error(y_true, y_pred))
    if name == "r2":
        return float(m.r2_score(y_true, y_pred))
    raise ValueError(f"unknown metric '{name}'")


def resampled(name: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, labels: Sequence[Any], rows: np.ndarray) -> list[float]:
    """`metric` on each bootstrap resample; `rows` is (resamples × n) row indices.

    Accuracy and binary ROC AUC, the metrics gated most often, are vectorised over all resamples
    (scikit-learn spends milliseconds per call on input checks); the rest go through `metric`.
    Resamples on which a metric is undefined (one class only, for ROC AUC) are left out.
    """
    import numpy as np

    if name == "accuracy":
        return [float(v) for v in (y_true[rows] == y_pred[rows]).mean(axis=1)]
    if name == "roc_auc" and proba is not None and proba.shape[1] == 2:
        from scipy.stats import rankdata

        # Mann-Whitney form of the AUC: equal to the trapezoidal ROC area, ties counted as halves.
        positive = y_true[rows] == 1
        ranks = rankdata(proba[:, 1][rows], axis=1)
        n_pos = positive.sum(axis=1)
        n_neg = rows.shape[1] - n_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return [float(v) for v in auc[(n_pos > 0) & (n_neg > 0)]]
    values = []
    for sample in rows:
        try:
            values.append(metric(name, y_true[sample], y_pred[sample], None if proba is None else proba[sample], labels))
        except ValueError:
            continue
    return values


def available(task: str, has_proba: bool) -> tuple[str, ...]:
    if task == "regression":
        return REGRESSION
    return tuple(n for n in CLASSIFICATION if has_proba or n not in NEEDS_PROBA)
