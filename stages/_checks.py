"""data.validate's rules: read from the config (no pandas), then judged by pandera and turned into results.

pandera runs every value, uniqueness, null, presence, cross-column and custom check, lazily, and
its failure cases give each failing row's index and value. Two things are done here instead:
parsing `dtype` (pandera's coercion reports the unparsable values, then runs the other checks on
the unparsed column and reports a TypeError for the whole column), and aggregate statistics
(a pandera check returns only True/False; the report needs the value).
"""

from __future__ import annotations

import importlib
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sluice.engine.plugin import ConfigProblem, KeyPath, StageFailed, did_you_mean

EXAMPLES = 5  # distinct offending values per rule: enough to recognise the problem
DEFAULT_FAILURE_CASES = 10
NUMERIC = ("min", "max", "exclusive_min", "exclusive_max")
TEXT = ("regex", "min_length", "max_length")
DATES = ("min_date", "max_date", "not_future")
# The report's order of a column's rules; `dtype` first because it decides what the others see.
COLUMN_RULES = ("required", "dtype", "nullable", "max_null_fraction", *NUMERIC, "allowed", "forbidden", "unique", *TEXT, *DATES)
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_PERCENTILE = re.compile(r"p(100|[0-9]{1,2}(?:\.[0-9]+)?)")


@dataclass(frozen=True)
class Rule:
    """One rule as configured: where it applies, what it expects, how much failure it tolerates."""

    column: str | None  # None for table rules (rows, strict, unique, compare, checks)
    rule: str  # the config key: "min", "stats.mean", "checks.0", "compare.1"
    expected: Any
    severity: str
    mostly: float | None = None  # None: every judged value must pass

    @property
    def ident(self) -> tuple[str | None, str]:
        return (self.column, self.rule)


@dataclass(frozen=True)
class Result:
    column: str | None
    rule: str
    expected: Any
    severity: str
    passed: bool
    failing: int = 0  # rows (columns, for `strict`) that break the rule
    checked: int = 0  # rows (or values) the rule judged: the denominator of `share`
    share: float = 0.0
    mostly: float | None = None
    failure_cases: tuple[dict[str, Any], ...] = ()  # {"row": index, "value": value}, first rows first
    examples: tuple[Any, ...] = ()  # distinct offending values
    note: str = ""


def _unpack(rule: Any, severity: str, mostly: float | None) -> tuple[Any, str, float | None]:
    if isinstance(rule, Mapping) and "value" in rule:
        return rule["value"], rule.get("severity", severity), rule.get("mostly", mostly)
    return rule, severity, mostly


def column_rules(column: str, rules: Mapping[str, Any], default: str) -> list[Rule]:
    """A column's rules in report order; `required` takes only its own severity, never an inherited one."""
    severity, mostly = rules.get("severity", default), rules.get("mostly")
    value, own, _ = _unpack(rules.get("required", True), "error", None)
    found = [Rule(column, "required", value, own)]
    for key in COLUMN_RULES[1:]:
        if key in rules:
            value, own, share = _unpack(rules[key], severity, mostly)
            found.append(Rule(column, key, value, own, None if key == "max_null_fraction" else share))
    for stat, bounds in rules.get("stats", {}).items():
        expected = {k: v for k, v in bounds.items() if k != "severity"}
        found.append(Rule(column, f"stats.{stat}", expected, bounds.get("severity", severity)))
    for i, check in enumerate(rules.get("checks", ())):
        value, own, share = _unpack(check, severity, mostly)
        found.append(Rule(column, f"checks.{i}", value, own, share))
    return found


def table_rules(config: Mapping[str, Any], default: str) -> list[Rule]:
    found = []
    if "unique" in config:
        value, own, share = _unpack(config["unique"], default, None)
        found.append(Rule(None, "unique", list(value), own, share))
    for i, cmp in enumerate(config.get("compare", ())):
        found.append(
            Rule(None, f"compare.{i}", f"{cmp['left']} {cmp['op']} {cmp['right']}", cmp.get("severity", default), cmp.get("mostly"))
        )
    for i, check in enumerate(config.get("checks", ())):
        value, own, share = _unpack(check, default, None)
        found.append(Rule(None, f"checks.{i}", value, own, share))
    return found


# ---- config problems, found from the text alone (`sluice validate` imports neither pandas nor user code)


def config_problems(config: Mapping[str, Any]) -> Iterator[ConfigProblem]:
    allowed = tuple(config.get("allow_modules", ()))
    for column, rules in config.get("columns", {}).items():
        at: KeyPath = ("columns", column)
        unpacked = {k: _unpack(v, "", None)[0] for k, v in rules.items()}
        if "regex" in unpacked:
            try:
                re.compile(unpacked["regex"])
            except re.error as exc:
                yield ConfigProblem(f"invalid regular expression: {exc}", (*at, "regex"))
        for low, high in (("min", "max"), ("min_length", "max_length"), ("exclusive_min", "exclusive_max")):
            if low in unpacked and high in unpacked and unpacked[low] > unpacked[high]:
                yield ConfigProblem(f"{low} {unpacked[low]} is greater than {high} {unpacked[high]}", (*at, low))
        dates = {k: _iso(unpacked[k]) for k in ("min_date", "max_date") if k in unpacked}
        for key, parsed in dates.items():
            if parsed is None:
                yield ConfigProblem(
                    f"{unpacked[key]!r} is not an ISO 8601 date or time, e.g. 2020-01-01 or 2020-01-01T08:00:00", (*at, key)
                )
        first, last = dates.get("min_date"), dates.get("max_date")
        if first is not None and last is not None and _naive(first) > _naive(last):
            yield ConfigProblem(f"min_date {unpacked['min_date']} is after max_date {unpacked['max_date']}", (*at, "min_date"))
        for key in DATES:
            if key in unpacked and unpacked.get("dtype") != "datetime":
                yield ConfigProblem(f"{key} needs `dtype: datetime` on the column, so that text is read as dates", (*at, key))
        for stat, bounds in rules.get("stats", {}).items():
            if bounds.get("min", float("-inf")) > bounds.get("max", float("inf")):
                yield ConfigProblem(f"stats.{stat}: min {bounds['min']} is greater than max {bounds['max']}", (*at, "stats", stat, "min"))
        for i, check in enumerate(rules.get("checks", ())):
            yield from _import_problems(_unpack(check, "", None)[0], allowed, (*at, "checks", i))
    for i, check in enumerate(config.get("checks", ())):
        yield from _import_problems(_unpack(check, "", None)[0], allowed, ("checks", i))
    for i, cmp in enumerate(config.get("compare", ())):
        if cmp["left"] == cmp["right"]:
            yield ConfigProblem(f"compares column '{cmp['left']}' with itself", ("compare", i, "right"))
    rows = config.get("rows", {})
    if rows.get("min", 1) > rows.get("max", float("inf")):
        yield ConfigProblem(f"rows.min {rows['min']} is greater than rows.max {rows['max']}", ("rows", "min"))


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _naive(moment: datetime) -> datetime:
    """`moment` as naive UTC when zoned, so that a zoned and a naive bound can be compared."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _import_problems(path: str, allowed: Sequence[str], at: KeyPath) -> Iterator[ConfigProblem]:
    """Importing runs a module's code: a check must lie under `allow_modules`, judged from its text."""
    if any(path.startswith(f"{prefix}.") for prefix in allowed):
        return
    listed = ", ".join(allowed) if allowed else "none listed"
    head = path.partition(".")[0]
    guess = did_you_mean(head, [a.split(".")[0] for a in allowed])
    yield ConfigProblem(
        f"'{path}' is not under a module in allow_modules ({listed}); list its module there to run it",
        at,
        f"{guess}{path[len(head) :]}" if guess and guess != head else None,
    )


def import_check(path: str, allowed: Sequence[str]) -> Callable[..., Any]:
    """The function at `path`, imported only if allowed (checked again here, right before importing)."""
    if next(_import_problems(path, allowed, ()), None) is not None:
        raise StageFailed(f"custom check '{path}' is not under a module in allow_modules; refusing to import it")
    module_name, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except ImportError as exc:
        raise StageFailed(f"custom check '{path}': cannot import {module_name}: {exc}") from None
    except AttributeError:
        raise StageFailed(f"custom check '{path}': module {module_name} has no '{name}'") from None
    if not callable(function):
        raise StageFailed(f"custom check '{path}' is not a function")
    return function
