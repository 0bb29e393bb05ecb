"""Metric definitions shared by sklearn.evaluate (on the test set) and model.gate (on bootstrap resamples).

One definition serves both so a gate's confidence interval is about exactly the figure evaluate reported.
A metric that is undefined on a test set (ROC AUC with one class) is reported as None with a reason,
never as NaN: NaN is not JSON, and every comparison with it is false.
"""

from __future__ import annotations

import math
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
NEEDS_PROBA = frozenset({"log_loss"})
NEEDS_SCORES = frozenset({"roc_auc"})  # probabilities, or a binary model's decision_function
REGRESSION = ("rmse", "mae", "r2")
ALL = CLASSIFICATION + REGRESSION
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
# sklearn's log_loss clips probabilities to the float64 machine epsilon (a row costs at most 36 nats).
LOG_LOSS_EPS = 2.220446049250313e-16


def metric(name: str, y_true: Any, y_pred: Any, proba: np.ndarray | None, labels: Sequence[Any], scores: np.ndarray | None = None) -> float:
    """One metric, computed exactly as the named scikit-learn function computes it.

    `labels` are the model's classes in `proba` column order (empty for regression); `scores`
    is a binary model's decision_function, used for ROC AUC when there are no probabilities.
    """
    from sklearn import metrics as m

    if name == "accuracy":
        return float(m.accuracy_score(y_true, y_pred))
    if name.startswith(("precision_", "recall_", "f1_")):
        kind, average = name.split("_")
        score = {"precision": m.precision_score, "recall": m.recall_score, "f1": m.f1_score}[kind]
        return float(score(y_true, y_pred, average=average, zero_division=0))
    if name == "roc_auc":
        if proba is None and scores is None:
            raise ValueError("roc_auc needs predicted probabilities or decision scores")
        if proba is None:
            return float(m.roc_auc_score(y_true, scores))
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


def undefined_reason(name: str, y_true: Any) -> str | None:
    """Why `name` has no value on this test set, or None when it has one."""
    import numpy as np

    if name == "roc_auc":
        present = np.unique(np.asarray(y_true))
        if len(present) < 2:
            return f"only one class in y_true ({', '.join(map(str, present))})"
    if name == "r2" and len(y_true) < 2:
        return "r2 needs at least two rows"
    return None


def score(
    name: str, y_true: Any, y_pred: Any, proba: np.ndarray | None, labels: Sequence[Any], scores: np.ndarray | None = None
) -> tuple[float | None, str | None]:
    """(value, None), or (None, reason) when the metric is undefined on these rows."""
    import warnings

    reason = undefined_reason(name, y_true)
    if reason is not None:
        return None, reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns and returns NaN where a metric is undefined
        value = metric(name, y_true, y_pred, proba, labels, scores)
    if not math.isfinite(value):
        return None, f"scikit-learn returned {value} for {name} on these rows"
    return value, None


def per_row_log_loss(y_true: np.ndarray, proba: np.ndarray, floor: float = LOG_LOSS_EPS) -> np.ndarray:
    """Each row's share of log_loss: −log of the probability given to the true class, floored at `floor`."""
    import numpy as np

    given = proba[np.arange(len(y_true)), y_true.astype(int)]
    return -np.log(np.clip(given, floor, 1.0 - LOG_LOSS_EPS))


def resampled(
    name: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    labels: Sequence[Any],
    rows: np.ndarray,
    scores: np.ndarray | None = None,
    log_loss_floor: float = LOG_LOSS_EPS,
) -> np.ndarray:
    """`metric` on each bootstrap resample; `rows` is (resamples × n) row indices; NaN where undefined.

    Two models resampled with the same `rows` give aligned arrays: their difference is a paired
    bootstrap. Accuracy, binary ROC AUC and log_loss (a mean of per-row losses) are vectorised
    over all resamples (scikit-learn spends milliseconds per call on input checks); the rest go
    through `metric`. Resamples with one class only leave ROC AUC undefined.
    """
    import numpy as np

    if name == "accuracy":
        return (y_true[rows] == y_pred[rows]).mean(axis=1)
    if name == "log_loss" and proba is not None:
        return per_row_log_loss(y_true, proba, log_loss_floor)[rows].mean(axis=1)
    positive = scores if proba is None else proba[:, 1] if proba.shape[1] == 2 else None
    if name == "roc_auc" and positive is not None:
        from scipy.stats import rankdata

        # Mann-Whitney form of the AUC: equal to the trapezoidal ROC area, ties counted as halves.
        is_positive = y_true[rows] == 1
        ranks = rankdata(positive[rows], axis=1)
        n_pos = is_positive.sum(axis=1)
        n_neg = rows.shape[1] - n_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * is_positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    values = np.full(len(rows), np.nan)
    for i, sample in enumerate(rows):
        try:
            value, _ = score(
                name,
                y_true[sample],
                y_pred[sample],
                None if proba is None else proba[sample],
                labels,
                None if scores is None else scores[sample],
            )
        except ValueError:  # e.g. a multiclass resample missing a class
            continue
        if value is not None:
            values[i] = value
    return values


def available(task: str, has_proba: bool, has_scores: bool = False) -> tuple[str, ...]:
    if task == "regression":
        return REGRESSION
    return tuple(n for n in CLASSIFICATION if (has_proba or n not in NEEDS_PROBA) and (has_proba or has_scores or n not in NEEDS_SCORES))
