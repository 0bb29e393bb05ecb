"""data.validate: checks a table against column and row-count rules, each of severity error or warn.

Built on pandas rather than pandera: pandera would be one more dependency of the `ml` extra
for rules that take a line or two of pandas each, and its error objects would still need
translating into our report and failure table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, write_json
from sluice.stages._tables import input_path, is_numeric_kind, kind_of, plain, read_table, sole_output, text_table

if TYPE_CHECKING:
    import pandas as pd

EXAMPLES = 5  # distinct offending values shown per rule: enough to recognise the problem
COLUMN_RULES = ("required", "dtype", "nullable", "max_null_fraction", "min", "max", "allowed", "unique", "regex")


@dataclass(frozen=True)
class RuleResult:
    column: str | None  # None for table-level rules (row count, strict)
    rule: str
    expected: Any
    severity: str
    passed: bool
    failing: int = 0  # rows (or columns, for `strict`) that break the rule
    examples: tuple[Any, ...] = ()
    note: str = ""


def _unpack(rule: Any, default_severity: str) -> tuple[Any, str]:
    if isinstance(rule, Mapping):
        return rule["value"], rule.get("severity", default_severity)
    return rule, default_severity


class ValidateStage(Plugin):
    name = "data.validate"
    version = "1"
    config_schema = schemas.load("stages/data.validate")
    inputs = (Port("table", desc="the table to check"),)
    outputs = (Port("report", desc="JSON report of every rule", any_name=True, keep_on_failure=True),)

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        for column, rules in config.get("columns", {}).items():
            if "regex" in rules:
                pattern, _ = _unpack(rules["regex"], "error")
                try:
                    re.compile(pattern)
                except re.error as exc:
                    yield ConfigProblem(f"invalid regular expression: {exc}", ("columns", column, "regex"))
            if "min" in rules and "max" in rules:
                low, high = _unpack(rules["min"], "")[0], _unpack(rules["max"], "")[0]
                if low > high:
                    yield ConfigProblem(f"min {low} is greater than max {high}", ("columns", column, "min"))
        rows = config.get("rows", {})
        if rows.get("min", 1) > rows.get("max", float("inf")):
            yield ConfigProblem(f"rows.min {rows['min']} is greater than rows.max {rows['max']}", ("rows", "min"))

    def run(self, ctx: StageContext) -> None:
        frame = read_table(input_path(ctx, "table"), "input", allow_empty=True)
        results = validate(frame, ctx.config)
        errors = [r for r in results if not r.passed and r.severity == "error"]
        warnings = [r for r in results if not r.passed and r.severity == "warn"]
        write_json(
            sole_output(ctx, "report"),
            {
                "rows": len(frame),
                "passed": not errors,
                "errors": len(errors),
                "warnings": len(warnings),
                "rules": [asdict(r) for r in results],
            },
        )
        for result in warnings:
            ctx.log.warning(
                "warning: %s %s %s: %d failing %s",
                result.column or "<table>",
                result.rule,
                result.expected,
                result.failing,
                _describe(result),
            )
        if errors:
            raise StageFailed(f"{len(errors)} validation rule(s) failed", violations_table(errors + warnings))
        ctx.log.info("%d rules checked on %d rows: every error-level rule passed", len(results), len(frame))


def violations_table(results: Iterable[RuleResult]) -> str:
    return text_table(
        ("column", "rule", "expected", "severity", "failing", "examples / note"),
        ((r.column or "<table>", r.rule, r.expected, r.severity, r.failing, _describe(r)) for r in results),
    )


def _describe(result: RuleResult) -> str:
    shown = ", ".join(repr(v) for v in result.examples)
    return "; ".join(part for part in (shown, result.note) if part)


def validate(frame: pd.DataFrame, config: Mapping[str, Any]) -> list[RuleResult]:
    """Every rule of `config` evaluated against `frame`, in config order, table rules first."""
    default = config.get("severity", "error")
    rows = config.get("rows", {})
    results = [_row_count(len(frame), rows, rows.get("severity", default))]
    columns = config.get("columns", {})
    if config.get("strict"):
        extra = [str(c) for c in frame.columns if c not in columns]
        results.append(RuleResult(None, "strict", "only listed columns", default, not extra, len(extra), tuple(extra[:EXAMPLES])))
    for column, rules in columns.items():
        results.extend(_column_results(frame, column, rules, rules.get("severity", default)))
    return results


def _row_count(count: int, rows: Mapping[str, Any], severity: str) -> RuleResult:
    low, high = rows.get("min", 1), rows.get("max")
    ok = count >= low and (high is None or count <= high)
    expected = f"{low}..{high if high is not None else ''}"
    return RuleResult(None, "rows", expected, severity, ok, 0 if ok else count, note=f"{count} rows")


def _column_results(frame: pd.DataFrame, column: str, rules: Mapping[str, Any], default: str) -> list[RuleResult]:
    required, severity = _unpack(rules.get("required", True), default)
    if column not in frame.columns:
        return [RuleResult(column, "required", required, severity, not required, note="column is absent")]
    results = []
    series = frame[column]
    for rule in COLUMN_RULES:
        if rule in rules:
            expected, severity = _unpack(rules[rule], default)
            results.append(_check(rule, series, expected, severity, column))
    return results


def _check(rule: str, series: pd.Series, expected: Any, severity: str, column: str) -> RuleResult:
    values = series.dropna()
    kind = kind_of(series)
    bad: pd.Series | None = None  # offending values, when the rule is judged value by value
    note = ""
    if rule == "required":
        failing = 0
    elif rule == "dtype":
        ok = kind == expected or (expected == "number" and is_numeric_kind(kind))
        return RuleResult(column, rule, expected, severity, ok, 0 if ok else len(series), note=f"dtype is {kind} ({series.dtype})")
    elif rule == "nullable":
        failing = 0 if expected else int(series.isna().sum())
    elif rule == "max_null_fraction":
        nulls = int(series.isna().sum())
        fraction = nulls / len(series) if len(series) else 0.0
        return RuleResult(column, rule, expected, severity, fraction <= expected, nulls, note=f"null fraction {fraction:.4g}")
    elif rule in ("min", "max"):
        if not (is_numeric_kind(kind) or kind == "bool"):
            return RuleResult(column, rule, expected, severity, False, len(values), note=f"column is {kind}, not numeric")
        bad = values[values < expected] if rule == "min" else values[values > expected]
    elif rule == "allowed":
        bad = values[~values.isin(expected)]
    elif rule == "unique":
        bad = values[values.duplicated(keep=False)] if expected else values.iloc[:0]
    else:  # regex
        bad = values[~values.astype(str).str.fullmatch(expected)]
    if bad is not None:
        failing = len(bad)
        examples = tuple(plain(v) for v in bad.drop_duplicates().head(EXAMPLES))
        return RuleResult(column, rule, expected, severity, failing == 0, failing, examples, note)
    return RuleResult(column, rule, expected, severity, failing == 0, failing, note=note)
