"""data.validate: checks a table against column, row-count and table rules, each of severity error or warn.

The rules are read in `_checks` (no pandas: `sluice validate` calls check()) and judged in
`_judge` on pandera, which gives every failing row's index and value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, write_json
from sluice.stages._checks import EXAMPLES, Result, config_problems
from sluice.stages._tables import input_path, read_table, sole_output, text_table

if TYPE_CHECKING:
    import pandas as pd


class ValidateStage(Plugin):
    name = "data.validate"
    version = "2"
    config_schema = schemas.load("stages/data.validate")
    inputs = (Port("table", desc="the table to check"),)
    outputs = (Port("report", desc="JSON report of every rule", any_name=True, keep_on_failure=True),)

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        return config_problems(config)

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
                describe(result),
            )
        if errors:
            raise StageFailed(f"{len(errors)} validation rule(s) failed", violations_table(errors + warnings))
        ctx.log.info("%d rules checked on %d rows: every error-level rule passed", len(results), len(frame))


def validate(frame: pd.DataFrame, config: Mapping[str, Any]) -> list[Result]:
    """Every rule of `config` evaluated against `frame`, in config order, table rules first and last."""
    from sluice.stages._judge import evaluate

    return evaluate(frame, config)


def violations_table(results: Iterable[Result]) -> str:
    return text_table(
        ("column", "rule", "expected", "severity", "failing", "share", "rows: values / note"),
        ((r.column or "<table>", r.rule, r.expected, r.severity, r.failing, _share(r), describe(r)) for r in results),
    )


def _share(result: Result) -> str:
    return f"{result.share:.2%}" if result.checked else "-"


def describe(result: Result) -> str:
    """The first failing rows with their values (or the distinct values, where rows do not apply), then the note."""
    if result.failure_cases:
        shown = ", ".join(f"row {c['row']}: {c['value']!r}" for c in result.failure_cases[:EXAMPLES])
        if result.failing > EXAMPLES:
            shown += ", …"
    else:
        shown = ", ".join(repr(v) for v in result.examples)
    return "; ".join(part for part in (shown, result.note) if part)
