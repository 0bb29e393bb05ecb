"""data.split: the same rows as train_test_split, stratification, formats, bad config and data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from sluice.engine.plugin import StageFailed
from sluice.stages.data_split import SplitStage
from tests.stages.conftest import config_problems

PLUGIN = SplitStage()


def _frame(rows: int = 100) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(rows, dtype=float), "label": ["a", "a", "a", "b"] * (rows // 4)})


def _split(harness, write_csv, frame, config, outputs=("train.csv", "test.csv")):  # type: ignore[no-untyped-def]
    out = harness.run(PLUGIN, config, {"table": write_csv(frame)}, dict(zip(("train", "test"), outputs, strict=True)))
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
    return tuple(read[out[name].suffix](out[name]) for name in ("train", "test"))


def test_rows_equal_train_test_split(harness, write_csv):
    frame = _frame()
    train, test = _split(harness, write_csv, frame, {"test_size": 0.3, "random_state": 5})
    expected_train, expected_test = train_test_split(frame, test_size=0.3, random_state=5)
    assert train["x"].tolist() == expected_train["x"].tolist()
    assert test["x"].tolist() == expected_test["x"].tolist()


def test_stratify_keeps_class_shares(harness, write_csv):
    train, test = _split(harness, write_csv, _frame(), {"test_size": 0.2, "stratify": "label"})
    assert (test["label"] == "b").mean() == pytest.approx(0.25)
    assert (train["label"] == "b").mean() == pytest.approx(0.25)


def test_integer_test_size_and_no_shuffle(harness, write_csv):
    train, test = _split(harness, write_csv, _frame(), {"test_size": 10, "shuffle": False})
    assert test["x"].tolist() == [float(v) for v in range(90, 100)] and len(train) == 90


def test_parquet_outputs(harness, write_csv):
    train, test = _split(harness, write_csv, _frame(), {}, ("train.parquet", "test.pq"))
    assert len(train) + len(test) == 100 and len(test) == 25


# The fixtures only hand out paths; each example overwrites the last one's files.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(4, 300), share=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_sizes_match_sklearn_for_any_share(harness, write_csv, rows, share, seed):
    frame = pd.DataFrame({"x": np.arange(rows)})
    try:
        expected_train, expected_test = train_test_split(frame, test_size=share, random_state=seed)
    except ValueError as exc:  # sklearn refuses (an empty side): the stage must fail cleanly, saying why
        with pytest.raises(StageFailed, match="cannot split"):
            _split(harness, write_csv, frame, {"test_size": share, "random_state": seed})
        assert "empty" in str(exc)
        return
    train, test = _split(harness, write_csv, frame, {"test_size": share, "random_state": seed})
    assert (len(train), len(test)) == (len(expected_train), len(expected_test))
    assert sorted(train["x"].tolist() + test["x"].tolist()) == list(range(rows))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"test_size": 1.5}, "not valid under any"),
        ({"test_size": 0}, "not valid under any"),
        ({"stratify": "label", "shuffle": False}, "stratify needs shuffle"),
        ({"seed": 1}, "Additional properties"),
    ],
)
def test_bad_config(config, message):
    problems = config_problems(PLUGIN, config)
    assert problems and any(message in p for p in problems), problems


def test_missing_stratify_column(harness, write_csv):
    with pytest.raises(StageFailed, match="lacks 1 required column") as failure:
        PLUGIN.run(harness.context({"stratify": "lable"}, {"table": write_csv(_frame())}, {"train": "a.csv", "test": "b.csv"}))
    assert "did you mean 'label'" in failure.value.details


def test_class_with_one_member_cannot_be_stratified(harness, write_csv):
    frame = _frame().assign(label=["a"] * 99 + ["b"])
    with pytest.raises(StageFailed, match="cannot split 100 rows"):
        PLUGIN.run(harness.context({"stratify": "label"}, {"table": write_csv(frame)}, {"train": "a.csv", "test": "b.csv"}))


def test_null_in_stratify_column(harness, write_csv):
    frame = _frame().assign(label=[None] + ["a"] * 99)
    with pytest.raises(StageFailed, match="1 null value"):
        PLUGIN.run(harness.context({"stratify": "label"}, {"table": write_csv(frame)}, {"train": "a.csv", "test": "b.csv"}))


def test_empty_table(harness, write_csv):
    with pytest.raises(StageFailed, match="has no rows"):
        PLUGIN.run(harness.context({}, {"table": write_csv(_frame().iloc[:0])}, {"train": "a.csv", "test": "b.csv"}))


def test_too_few_rows(harness, write_csv):
    with pytest.raises(StageFailed, match="cannot split 1 rows"):
        PLUGIN.run(harness.context({}, {"table": write_csv(_frame(4).iloc[:1])}, {"train": "a.csv", "test": "b.csv"}))
