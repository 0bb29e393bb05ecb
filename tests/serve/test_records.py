"""The column fast path of record validation decides exactly what the per-record check decides."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.stages.serving.model import Feature, LoadedModel, Metadata
from sluice.stages.serving.records import HugeInt, RecordErrors, Rows, check_each, validate_records

FEATURES = (
    Feature("f", "float64"),
    Feature("h", "float32"),
    Feature("n", "float64"),  # nullable: the model imputes it
    Feature("i", "int64"),
    Feature("u", "uint8"),
    Feature("b", "bool"),
    Feature("s", "object"),
)
NULLABLE = frozenset({"n"})
MODEL = LoadedModel(Metadata({}, FEATURES, "classification", None, "model.joblib", "0" * 64), estimator=None)

# Mostly valid values, with the hostile ones the server must refuse mixed in.
ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([None, True, False, "", "x", 1e39, 1e308, -1e308, 3.0, 300, -1, HugeInt("9" * 400), [], {}]),
)


def _valid(feature: Feature) -> st.SearchStrategy[Any]:
    return {
        "f": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**40), 2**40)),
        "h": st.floats(-3e38, 3e38),
        "n": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "i": st.integers(-(2**63), 2**63 - 1),
        "u": st.integers(0, 255),
        "b": st.booleans(),
        "s": st.text(max_size=5),
    }[feature.name]


def _record(mostly_valid: bool) -> st.SearchStrategy[Any]:
    fields = {f.name: st.one_of(_valid(f), ANY_VALUE) if not mostly_valid else _valid(f) for f in FEATURES}
    record = st.fixed_dictionaries(fields, optional={"extra": st.just(1)} if not mostly_valid else {})
    return st.one_of(record, st.just("not a record")) if not mostly_valid else record


BATCHES = st.one_of(st.lists(_record(True), min_size=1, max_size=30), st.lists(_record(False), min_size=1, max_size=30))


@settings(max_examples=300, deadline=None)
@given(BATCHES)
def test_fast_path_agrees_with_the_per_record_check(batch: list[Any]) -> None:
    try:
        slow = check_each(batch, FEATURES, 20, NULLABLE)
    except RecordErrors as exc:
        with pytest.raises(RecordErrors) as caught:
            validate_records(batch, FEATURES, 1000, 20, NULLABLE)
        assert (caught.value.errors, caught.value.total) == (exc.errors, exc.total)
        return
    fast = validate_records(batch, FEATURES, 1000, 20, NULLABLE)
    pd.testing.assert_frame_equal(MODEL.frame(fast), MODEL.frame(slow), check_exact=True)


def test_a_clean_batch_takes_the_column_path_and_reads_back_as_records() -> None:
    batch = [
        {"f": 1, "h": 2.5, "n": None, "i": 7, "u": 255, "b": True, "s": "a"},
        {"f": 0.5, "h": 0.0, "n": 1.0, "i": -7, "u": 0, "b": False, "s": ""},
    ]
    rows = validate_records(batch, FEATURES, 10, 20, NULLABLE)
    assert isinstance(rows, Rows) and len(rows) == 2
    first = rows[0]
    assert first["f"] == 1.0 and math.isnan(first["n"]) and first["i"] == 7 and first["b"] is True and first["s"] == "a"
    assert [r["i"] for r in rows[1:]] == [-7]
