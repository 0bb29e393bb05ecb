"""Predictions whose failures are the client's to fix: find the records and fields the model cannot compute.

A value can pass validation and still break the model's arithmetic: 1e308 is a valid float64,
but a scaler dividing it by 0.01 overflows and the estimator refuses the infinity. That is a
422 naming the field, not a 500. A failure is blamed on the data only when the same model
answers for a neutral record, so a broken model still surfaces as a server error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .model import Feature, LoadedModel
from .records import RecordErrors

_NEUTRAL = {"bool": False, "integer": 0, "number": 0.0}


def neutral_record(features: Sequence[Feature]) -> dict[str, Any]:
    """Zeros, False and "": what the self-check predicts and what a suspect field is replaced by."""
    return {f.name: _NEUTRAL.get(f.kind, "") for f in features}


def nullable_features(model: LoadedModel) -> frozenset[str]:
    """The number features the model answers for when they are NaN (it imputes them)."""
    base = neutral_record(model.metadata.features)
    return frozenset(f.name for f in model.metadata.features if f.kind == "number" and _answers(model, [{**base, f.name: math.nan}]))


def predict_or_blame(model: LoadedModel, records: Sequence[Mapping[str, Any]], max_problems: int) -> list[Any]:
    """The predictions, or RecordErrors naming up to `max_problems` records (and fields) the model cannot compute."""
    try:
        predictions = _predict(model, records)
        if _finite(predictions):
            return predictions
    except Exception:  # noqa: BLE001  (decided below: the data's fault or the server's)
        pass
    base = neutral_record(model.metadata.features)
    if not _answers(model, [base]):
        return model.predict(records)  # the model fails on anything: a server error, raised as such
    problems: list[dict[str, Any]] = []
    _bisect(model, records, 0, base, problems, max_problems)
    if not problems:  # fails as a batch, answers row by row: not the client's doing
        return model.predict(records)
    raise RecordErrors(problems)


def _bisect(
    model: LoadedModel, rows: Sequence[Mapping[str, Any]], offset: int, base: dict[str, Any], out: list[dict[str, Any]], limit: int
) -> None:
    """Halves the failing block until single records are left: about log2(rows) predictions per bad record."""
    if len(out) >= limit or _answers(model, rows):
        return
    if len(rows) == 1:
        out.extend(_blame_fields(model, rows[0], offset, base))
        return
    middle = len(rows) // 2
    _bisect(model, rows[:middle], offset, base, out, limit)
    _bisect(model, rows[middle:], offset + middle, base, out, limit)


def _blame_fields(model: LoadedModel, row: Mapping[str, Any], index: int, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Each field that breaks the model on its own, with every other field neutral; else the whole record."""
    bad = [name for name in row if not _answers(model, [{**base, name: row[name]}])]
    if not bad:
        return [
            {
                "loc": ["body", index],
                "msg": "the model cannot compute a prediction for this record's values together",
                "type": "value_error.model",
            }
        ]
    return [
        {
            "loc": ["body", index, name],
            "msg": f"feature '{name}': the model cannot compute a prediction for {row[name]!r}",
            "type": "value_error.model",
        }
        for name in bad
    ]


def _predict(model: LoadedModel, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Overflow is judged by its outcome (an error or a non-finite answer), so numpy need not warn
    about it on every hostile request; errstate is per thread, unlike the warnings filters."""
    import numpy as np

    with np.errstate(all="ignore"):
        return model.predict(rows)


def _answers(model: LoadedModel, rows: Sequence[Mapping[str, Any]]) -> bool:
    try:
        return _finite(_predict(model, rows))
    except Exception:  # noqa: BLE001  (any failure means "no answer" here)
        return False


def _finite(predictions: Sequence[Any]) -> bool:
    """Non-finite outputs cannot be sent as JSON numbers, so they are failures too."""
    return all(math.isfinite(p) for p in predictions if isinstance(p, float))
