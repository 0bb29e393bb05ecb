"""data.validate: each rule, severities, the report, bad config and bad data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.engine.plugin import StageFailed
from sluice.stages.data_validate import ValidateStage, validate
from tests.stages.conftest import config_problems

PLUGIN = ValidateStage()


@pytest.fixture
def people() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a1", "a2", "a3", "b4"],
            "age": [31, 45, None, 17],
            "country": ["FR", "DE", "FR", "XX"],
            "score": [0.5, 0.7, 0.9, 1.5],
        }
    )


def _by_rule(results: list, column: str, rule: str):  # type: ignore[no-untyped-def]
    return next(r for r in results if r.column == column and r.rule == rule)


def test_happy_path_writes_a_passing_report(harness, write_csv, people):
    config = {"columns": {"id": {"dtype": "string", "unique": True, "regex": "[ab][0-9]"}, "score": {"min": 0}}}
    out = harness.run(PLUGIN, config, {"table": write_csv(people)}, {"report": "validation.json"})
    report = json.loads(out["report"].read_text())
    assert report["passed"] is True
    assert report["rows"] == 4
    assert {(r["column"], r["rule"]) for r in report["rules"]} == {
        (None, "rows"),
        ("id", "dtype"),
        ("id", "unique"),
        ("id", "regex"),
        ("score", "min"),
    }


@pytest.mark.parametrize(
    ("rules", "column", "rule", "failing", "examples"),
    [
        ({"dtype": "int"}, "score", "dtype", 4, (0.5, 0.7, 0.9, 1.5)),
        ({"dtype": "number"}, "country", "dtype", 4, ("FR", "DE", "XX")),
        ({"nullable": False}, "age", "nullable", 1, ()),
        ({"min": 18}, "age", "min", 1, (17.0,)),
        ({"max": 1.0}, "score", "max", 1, (1.5,)),
        ({"allowed": ["FR", "DE"]}, "country", "allowed", 1, ("XX",)),
        ({"unique": True}, "country", "unique", 2, ("FR",)),
        ({"regex": "a[0-9]"}, "id", "regex", 1, ("b4",)),
    ],
)
def test_each_rule_counts_its_violations(people, rules, column, rule, failing, examples):
    result = _by_rule(validate(people, {"columns": {column: rules}}), column, rule)
    assert (result.passed, result.failing, result.examples) == (False, failing, examples)


def test_max_null_fraction_is_a_share_of_rows(people):
    assert _by_rule(validate(people, {"columns": {"age": {"max_null_fraction": 0.25}}}), "age", "max_null_fraction").passed
    assert not _by_rule(validate(people, {"columns": {"age": {"max_null_fraction": 0.2}}}), "age", "max_null_fraction").passed


def test_min_on_a_text_column_fails_with_a_note(people):
    result = _by_rule(validate(people, {"columns": {"country": {"min": 0}}}), "country", "min")
    assert not result.passed and "not numeric" in result.note


def test_row_count_bounds(people):
    assert not validate(people, {"rows": {"min": 5}})[0].passed
    assert not validate(people, {"rows": {"max": 3}})[0].passed
    assert validate(people, {"rows": {"min": 4, "max": 4}})[0].passed


def test_strict_lists_unexpected_columns(people):
    strict = next(r for r in validate(people, {"strict": True, "columns": {"id": {}}}) if r.rule == "strict")
    assert not strict.passed and strict.examples == ("age", "country", "score")


def test_absent_optional_column_skips_its_rules(people):
    results = validate(people, {"columns": {"email": {"required": False, "regex": ".+@.+"}}})
    assert [(r.rule, r.passed) for r in results if r.column == "email"] == [("required", True)]


def test_error_fails_the_stage_with_a_table_and_still_writes_the_report(harness, write_csv, people):
    config = {"columns": {"country": {"allowed": ["FR", "DE"]}, "missing": {"dtype": "int"}}}
    ctx = harness.context(config, {"table": write_csv(people)}, {"report": "r.json"})
    with pytest.raises(StageFailed, match="2 validation rule") as failure:
        PLUGIN.run(ctx)
    assert "country" in failure.value.details and "'XX'" in failure.value.details
    assert "column is absent" in failure.value.details
    assert json.loads(ctx.outputs["report"].read_text())["errors"] == 2


def test_warn_severity_reports_without_failing(harness, write_csv, people):
    config = {
        "severity": "warn",
        "columns": {"age": {"min": 18}, "score": {"max": {"value": 1.0, "severity": "warn"}}},
    }
    out = harness.run(PLUGIN, config, {"table": write_csv(people)}, {"report": "r.json"})
    report = json.loads(out["report"].read_text())
    assert report["passed"] is True and report["warnings"] == 2


def test_rule_severity_overrides_column_severity(people):
    config = {"columns": {"age": {"severity": "warn", "min": {"value": 18, "severity": "error"}, "nullable": False}}}
    results = validate(people, config)
    assert (_by_rule(results, "age", "min").severity, _by_rule(results, "age", "nullable").severity) == ("error", "warn")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"columns": {"a": {"dtype": "integer"}}}, "not valid"),
        ({"columns": {"a": {"minimum": 1}}}, "Additional properties"),
        ({"columns": {"a": {"regex": "(unclosed"}}}, "invalid regular expression"),
        ({"columns": {"a": {"min": 5, "max": 1}}}, "min 5 is greater than max 1"),
        ({"rows": {"min": 10, "max": 1}}, "rows.min 10 is greater than rows.max 1"),
        ({"severity": "fatal"}, "is not one of"),
    ],
)
def test_bad_config_is_reported_before_running(config, message):
    problems = config_problems(PLUGIN, config)
    assert problems and any(message in p for p in problems), problems


def test_empty_table_fails_the_default_row_rule(harness, write_csv):
    ctx = harness.context({}, {"table": write_csv(pd.DataFrame({"a": []}))}, {"report": "r.json"})
    with pytest.raises(StageFailed, match="1 validation rule"):
        PLUGIN.run(ctx)


def test_file_with_no_header_is_a_clean_failure(harness, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(StageFailed, match="is empty"):
        PLUGIN.run(harness.context({}, {"table": empty}, {"report": "r.json"}))


def test_missing_input_name_says_which_exist(harness, write_csv, people):
    with pytest.raises(StageFailed, match=r"input named 'table'.*did you mean"):
        PLUGIN.run(harness.context({}, {"tabel": write_csv(people)}, {"report": "r.json"}))


def test_parquet_input(harness, write_csv, people):
    out = harness.run(PLUGIN, {"columns": {"age": {"dtype": "float"}}}, {"table": write_csv(people, "t.parquet")}, {"report": "r.json"})
    assert json.loads(out["report"].read_text())["passed"]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=50),
    low=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_min_counts_match_a_direct_count(values, low):
    frame = pd.DataFrame({"x": pd.array(values, dtype="Float64")}).astype("float64")
    result = _by_rule(validate(frame, {"columns": {"x": {"min": low, "nullable": False}}}), "x", "min")
    series = np.array([v for v in values if v is not None])
    assert result.failing == int((series < low).sum())
    nulls = _by_rule(validate(frame, {"columns": {"x": {"nullable": False}}}), "x", "nullable")
    assert nulls.failing == sum(v is None for v in values)
