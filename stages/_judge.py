"""data.validate's rules judged on a table: dtypes parsed here, every other row rule run by pandera in one lazy pass.

Parsing `dtype` is done here because pandera's coercion, once a value fails to parse, runs the
other checks on the unparsed column and reports one TypeError for the whole column; here each
unparsable value is a failure of `dtype` with its row, and the other rules judge the rest.
Aggregate statistics are computed here too: a pandera check returns only True or False, and
the report shows the value. Imported only by run(): it imports pandas and pandera.
"""

from __future__ import annotations

import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandas.api import types

from sluice.engine.plugin import StageFailed
from sluice.stages._checks import DEFAULT_FAILURE_CASES, EXAMPLES, NUMERIC, OPS, Result, Rule, column_rules, import_check, table_rules
from sluice.stages._tables import kind_of

_BOUND = {"min": operator.ge, "max": operator.le, "exclusive_min": operator.gt, "exclusive_max": operator.lt}
_TABLE = "\0table"  # the column key of table-level checks in the failure cases


@dataclass(frozen=True)
class _Parsed:
    """A column as the value rules see it: parsed to its dtype, values that did not parse set to null."""

    series: pd.Series
    bad: pd.Series | None = None  # the original values that break `dtype`, by row
    note: str = ""


@dataclass(frozen=True)
class _Placed:
    """Where pandera reports a rule's failures, and how to read them back."""

    key: tuple[str, str]  # (column or _TABLE, check name or "#<position>")
    checked: int
    value_of: Callable[[Any], Any] | None = None  # the reported value of a failing row, for table checks
    note: str = ""


@dataclass
class _Plan:
    """Built while reading the rules: pandera's columns and table checks, and where each rule lands."""

    checks: dict[str, list[Any]] = field(default_factory=dict)  # column → its pandera checks
    table_checks: list[Any] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # check key → failing rows, filled as pandera runs
    placed: dict[tuple[str | None, str], _Placed] = field(default_factory=dict)
    direct: dict[tuple[str | None, str], Result] = field(default_factory=dict)  # rules judged without pandera


def evaluate(frame: pd.DataFrame, config: Mapping[str, Any]) -> list[Result]:
    """Every rule of `config` judged on `frame`: rows and strict first, then each column, then table rules."""
    default = config.get("severity", "error")
    limit = config.get("failure_cases", DEFAULT_FAILURE_CASES)
    allowed = tuple(config.get("allow_modules", ()))
    results = [_row_count(len(frame), config.get("rows", {}), default)]
    columns: Mapping[str, Mapping[str, Any]] = config.get("columns", {})
    if config.get("strict"):
        extra = [str(c) for c in frame.columns if c not in columns]
        results.append(
            Result(
                None, "strict", "only listed columns", default, not extra, len(extra), len(frame.columns), examples=tuple(extra[:EXAMPLES])
            )
        )
    plan, ordered, judged = _Plan(), [], frame.copy(deep=False)
    for name, spec in columns.items():
        rules = column_rules(name, spec, default)
        required = rules[0]
        if name not in frame.columns:  # only `required` is judged: the other rules have nothing to look at
            ordered.append(required)
            plan.direct[required.ident] = Result(
                name, "required", required.expected, required.severity, not required.expected, note="column is absent"
            )
            continue
        ordered.extend(rules if "required" in spec else rules[1:])
        parsed = _parse(frame[name], spec)
        judged[name] = parsed.series
        _plan_column(plan, name, parsed, frame[name], rules[1:], allowed, limit)
        plan.direct[required.ident] = Result(name, "required", required.expected, required.severity, True)
    rules = table_rules(config, default)
    ordered.extend(rules)
    for rule in rules:
        _plan_table_rule(plan, rule, judged, config, allowed, limit)
    cases = _run(plan, judged)
    for rule in ordered:
        if rule.ident in plan.direct:
            results.append(plan.direct[rule.ident])
        else:
            placed = plan.placed[rule.ident]
            results.append(_result(rule, placed, cases.get(placed.key), plan.counts.get(placed.key), limit))
    return results


def _row_count(count: int, rows: Mapping[str, Any], default: str) -> Result:
    low, high = rows.get("min", 1), rows.get("max")
    ok = count >= low and (high is None or count <= high)
    expected = f"{low}..{high if high is not None else ''}"
    return Result(None, "rows", expected, rows.get("severity", default), ok, 0 if ok else count, note=f"{count} rows")


# ---- dtypes


def _parse(series: pd.Series, spec: Mapping[str, Any]) -> _Parsed:
    """`series` read as its declared dtype; text is parsed, and each value that does not parse is `bad`."""
    dtype = spec["dtype"]["value"] if isinstance(spec.get("dtype"), Mapping) else spec.get("dtype")
    kind, present = kind_of(series), series.notna()
    if dtype is None or (kind == dtype and (dtype != "string" or _all_text(series))):
        return _Parsed(series)
    wrong = _Parsed(series.where(~present), series[present], f"column is {kind}")  # every value breaks dtype
    if dtype in ("int", "float", "number"):
        if kind not in ("int", "float", "string"):
            return wrong
        numbers = pd.to_numeric(series, errors="coerce") if kind == "string" else series
        bad = present & numbers.isna()
        if dtype == "int":
            bad |= numbers.notna() & (numbers % 1 != 0)
        return _Parsed(numbers.where(~(present & numbers.isna())), _or_none(series, bad))
    if kind != "string":
        return wrong
    if dtype == "datetime":
        moments = _to_datetime(series)
        return _Parsed(moments, _or_none(series, present & moments.isna()))
    if dtype == "bool":
        words = series.map(lambda v: v if isinstance(v, bool) else str(v).strip().lower(), na_action="ignore")
        flags = words.map({True: True, False: False, "true": True, "false": False}, na_action="ignore")
        return _Parsed(flags.astype("boolean"), _or_none(series, present & flags.isna()))
    if dtype == "string":  # an object column holding numbers as well as text (Parquet)
        bad = present & ~series.map(lambda v: isinstance(v, str), na_action="ignore").fillna(True).astype(bool)
        return _Parsed(series.where(~bad), _or_none(series, bad))
    return wrong  # category: only a Parquet categorical column is one


def _all_text(series: pd.Series) -> bool:
    return not types.is_object_dtype(series.dtype) or bool(series.dropna().map(type).eq(str).all())


def _or_none(series: pd.Series, bad: pd.Series) -> pd.Series | None:
    return series[bad] if bad.any() else None


def _to_datetime(series: pd.Series) -> pd.Series:
    """Text as datetimes; values in another format than the first value's are parsed one by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": the one-by-one pass handles mixed formats
        moments = _parse_dates(series, None)
        retry = series.notna() & moments.isna()
        if retry.any():
            again = _parse_dates(series[retry], "mixed")
            if _zoned(again) != _zoned(moments):
                moments, again = _as_utc(moments), _as_utc(again)
            moments = moments.copy()
            moments[retry] = again
    return moments


def _parse_dates(series: pd.Series, fmt: str | None) -> pd.Series:
    try:
        moments = pd.to_datetime(series, errors="coerce", format=fmt)
    except (ValueError, TypeError):
        moments = None
    if moments is None or moments.dtype == object:  # several time zones, or zoned and naive: compare in UTC
        moments = pd.to_datetime(series, errors="coerce", format=fmt, utc=True)
    return moments


def _zoned(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype)


def _as_utc(moments: pd.Series) -> pd.Series:
    return moments.dt.tz_convert("UTC") if _zoned(moments) else moments.dt.tz_localize("UTC")


def _dtype_result(rule: Rule, parsed: _Parsed, checked: int, limit: int) -> Result:
    bad = parsed.bad if parsed.bad is not None else pd.Series([], dtype=object)
    cases = pd.DataFrame({"index": bad.index, "failure_case": bad.to_numpy()})
    return _judged(rule, len(bad), checked, cases, limit, parsed.note)


# ---- rules into pandera checks


def _plan_column(
    plan: _Plan, name: str, parsed: _Parsed, original: pd.Series, rules: Sequence[Rule], allowed: Sequence[str], limit: int
) -> None:
    series = parsed.series
    kind = kind_of(series)
    values = int(series.notna().sum())
    for rule in rules:
        if rule.rule == "dtype":
            plan.direct[rule.ident] = _dtype_result(rule, parsed, int(original.notna().sum()), limit)
        elif rule.rule == "max_null_fraction":
            nulls = int(original.isna().sum())
            fraction = nulls / len(original) if len(original) else 0.0
            ok = fraction <= rule.expected
            note = f"null fraction {fraction:.4g}"
            plan.direct[rule.ident] = Result(name, rule.rule, rule.expected, rule.severity, ok, nulls, len(original), fraction, note=note)
        elif rule.rule.startswith("stats."):
            plan.direct[rule.ident] = _stat_result(rule, series, kind, values)
        elif rule.rule in ("nullable", "not_future", "unique") and rule.expected is (rule.rule == "nullable"):  # nothing to check
            plan.direct[rule.ident] = Result(name, rule.rule, rule.expected, rule.severity, True, checked=values)
        elif rule.rule == "nullable":  # a null that `dtype` made (an unparsable value) is reported there, not here
            made = parsed.bad.index if parsed.bad is not None else None
            present: Callable[..., Any] = (lambda s: s.notna()) if made is None else (lambda s, made=made: s.notna() | s.index.isin(made))
            _add(plan, rule, name, present, len(series), limit, ignore_na=False)
        elif rule.rule == "unique":
            _add(plan, rule, name, lambda s: ~s.duplicated(keep=False), values, limit)
        else:
            try:
                check = _value_check(rule, kind, allowed)
            except StageFailed as exc:
                plan.direct[rule.ident] = Result(name, rule.rule, rule.expected, rule.severity, False, note=str(exc))
                continue
            note = f"column is {kind}, not numeric" if rule.rule in NUMERIC and kind not in ("int", "float", "bool") else ""
            _add(plan, rule, name, check, values, limit, note=note)


def _add(
    plan: _Plan,
    rule: Rule,
    column: str,
    check: Callable[[Any], Any],
    checked: int,
    limit: int,
    *,
    ignore_na: bool = True,
    value_of: Callable[[Any], Any] | None = None,
    note: str = "",
) -> None:
    """`check` as a pandera check of `column` (or of the table) that keeps only the first `limit` failure cases.

    pandera formats every failure case into its error message, one Python string each, which
    dominated the time on tables with many failing rows; the wrapper counts the failures instead.
    """
    checks = plan.table_checks if column == _TABLE else plan.checks.setdefault(column, [])
    key = (column, f"#{len(checks)}")

    def counted(data: Any) -> Any:
        passed = check(data)
        if isinstance(passed, pd.Series | pd.DataFrame):
            flags = passed.to_numpy()
            if flags.dtype != bool:  # nullable booleans: <NA> fails
                flags = passed.fillna(False).astype(bool).to_numpy()
            plan.counts[key] = flags.size - int(flags.sum())
        return passed

    checks.append(pa.Check(counted, name=rule.rule, ignore_na=ignore_na, n_failure_cases=max(limit, 1)))
    plan.placed[rule.ident] = _Placed(key, checked, value_of=value_of, note=note)


def _value_check(rule: Rule, kind: str, allowed: Sequence[str]) -> Callable[[Any], Any]:
    """A value rule as a vectorised check (values → True where they pass), converting where the column's kind needs it."""
    value = rule.expected
    if rule.rule in NUMERIC:
        compare = _BOUND[rule.rule]
        if kind in ("int", "float", "bool"):
            return lambda s: compare(s, value)
        return lambda s: compare(pd.to_numeric(s, errors="coerce"), value)  # text that is no number fails
    if rule.rule == "allowed":
        return lambda s: s.isin(value)
    if rule.rule == "forbidden":
        return lambda s: ~s.isin(value)
    if rule.rule == "regex":
        pattern = re.compile(value)
        return lambda s: _text(s).str.fullmatch(pattern).fillna(False).astype(bool)
    if rule.rule in ("min_length", "max_length"):
        bound = operator.ge if rule.rule == "min_length" else operator.le
        return lambda s: bound(_text(s).str.len(), value)
    if rule.rule in ("min_date", "max_date"):
        compare = _BOUND["min" if rule.rule == "min_date" else "max"]
        return lambda s: compare(s, _moment(value, s))
    if rule.rule == "not_future":
        return lambda s: s <= _moment(None, s)
    return import_check(value, allowed)  # checks.N: a custom check


def _text(series: pd.Series) -> pd.Series:
    return series if types.is_string_dtype(series.dtype) and not types.is_object_dtype(series.dtype) else series.astype(str)


def _moment(text: str | None, series: pd.Series) -> pd.Timestamp:
    """`text` (None: now) as a timestamp comparable with `series`: in its time zone, or naive if it has none."""
    zone = getattr(series.dtype, "tz", None)
    if text is None:
        return pd.Timestamp.now(tz=zone)
    moment = pd.Timestamp(text)
    if zone is None:
        return moment.tz_convert("UTC").tz_localize(None) if moment.tzinfo is not None else moment
    return moment.tz_convert(zone) if moment.tzinfo is not None else moment.tz_localize(zone)


def _stat_result(rule: Rule, series: pd.Series, kind: str, values: int) -> Result:
    numbers = series if kind in ("int", "float", "bool") else pd.to_numeric(series, errors="coerce")
    numbers = numbers.dropna().astype(float)
    stat = rule.rule.removeprefix("stats.")
    if stat == "mean":
        value = numbers.mean()
    elif stat == "median":
        value = numbers.median()
    elif stat == "std":
        value = numbers.std()
    else:
        value = numbers.quantile(float(stat[1:]) / 100)
    low, high = rule.expected.get("min", -math.inf), rule.expected.get("max", math.inf)
    ok = bool(not math.isnan(value) and low <= value <= high)
    note = f"{stat} {value:.6g}" if not math.isnan(value) else f"{stat} undefined: {len(numbers)} numeric value(s)"
    return Result(rule.column, rule.rule, rule.expected, rule.severity, ok, 0 if ok else 1, values, note=note)


def _plan_table_rule(plan: _Plan, rule: Rule, judged: pd.DataFrame, config: Mapping[str, Any], allowed: Sequence[str], limit: int) -> None:
    if rule.rule == "unique":
        names = rule.expected
    elif rule.rule.startswith("compare."):
        cmp = config["compare"][int(rule.rule.split(".")[1])]
        names = [cmp["left"], cmp["right"]]
    else:
        names = []
    absent = [n for n in names if n not in judged.columns]
    if absent:
        plan.direct[rule.ident] = Result(None, rule.rule, rule.expected, rule.severity, False, note=f"column {', '.join(absent)} is absent")
        return
    complete = int(judged[names].notna().all(axis=1).sum()) if names else len(judged)
    value_of = (lambda row: {n: _plain(judged.at[row, n]) for n in names}) if names else None
    if rule.rule == "unique":  # a check of the first column, so pandera reports each failing row once
        keys = judged[names]
        repeated = keys.duplicated(keep=False) & keys.notna().all(axis=1)
        _add(plan, rule, names[0], lambda s: ~repeated.loc[s.index], complete, limit, value_of=value_of)
    elif rule.rule.startswith("compare."):  # a check of the left column, for the same reason
        other, op = judged[cmp["right"]], OPS[cmp["op"]]
        _add(plan, rule, cmp["left"], lambda s: op(s, other.loc[s.index]) | other.loc[s.index].isna(), complete, limit, value_of=value_of)
    else:
        try:
            check = import_check(rule.expected, allowed)
        except StageFailed as exc:
            plan.direct[rule.ident] = Result(None, rule.rule, rule.expected, rule.severity, False, note=str(exc))
            return
        _add(plan, rule, _TABLE, check, complete, limit, ignore_na=False)


# ---- pandera's failure cases into results


def _run(plan: _Plan, judged: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """pandera's failure cases, one frame per check key; empty when every check passed."""
    columns = {name: pa.Column(checks=checks, required=False, nullable=True, name=name) for name, checks in plan.checks.items()}
    schema = pa.DataFrameSchema(columns, checks=plan.table_checks)
    try:
        schema.validate(judged, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return {}
    column = cases["column"].where(cases["schema_context"] == "Column", _TABLE)
    number = pd.to_numeric(cases["check_number"], errors="coerce").fillna(-1).astype(int)
    return {(str(c), f"#{k}"): group for (c, k), group in cases.groupby([column, number], sort=False)}


def _result(rule: Rule, placed: _Placed, cases: pd.DataFrame | None, counted: int | None, limit: int) -> Result:
    if cases is None or counted == 0:
        return _judged(rule, 0, placed.checked, None, limit, placed.note)
    scalar = cases[cases["index"].isna()]
    if len(scalar):  # the check returned one boolean, or raised
        outcome = scalar["failure_case"].iloc[0]
        note = "returned False" if str(outcome) == "False" else f"raised {outcome}"
        return Result(rule.column, rule.rule, rule.expected, rule.severity, False, 1, placed.checked, note=note)
    if placed.key[0] == _TABLE:  # pandera lists each failing row of a table check once per column
        rows = cases["index"].drop_duplicates()
        cases = pd.DataFrame({"index": rows.to_numpy(), "failure_case": None})
    failing = counted if counted is not None else len(cases)
    return _judged(rule, failing, placed.checked, cases, limit, placed.note, placed.value_of)


def _judged(
    rule: Rule,
    failing: int,
    checked: int,
    cases: pd.DataFrame | None,
    limit: int,
    note: str = "",
    value_of: Callable[[Any], Any] | None = None,
) -> Result:
    """A row-by-row rule's result: passed when no row fails, or when at least `mostly` of the judged rows pass."""
    share = failing / checked if checked else 0.0
    passed = failing == 0 if rule.mostly is None else share <= 1 - rule.mostly + 1e-12
    shown: tuple[dict[str, Any], ...] = ()
    examples: tuple[Any, ...] = ()
    if cases is not None and failing:
        head = cases.head(limit)
        values = [value_of(row) for row in head["index"]] if value_of else [_plain(v) for v in head["failure_case"]]
        shown = tuple({"row": _plain(row), "value": v} for row, v in zip(head["index"], values, strict=True))
        if value_of is None:
            distinct = cases["failure_case"].dropna().drop_duplicates().head(EXAMPLES)
            examples = tuple(_plain(v) for v in distinct)
    return Result(rule.column, rule.rule, rule.expected, rule.severity, passed, failing, checked, share, rule.mostly, shown, examples, note)


def _plain(value: Any) -> Any:
    """A cell as plain JSON: numpy scalars as Python ones, timestamps as ISO text, missing as None."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
        return None if isinstance(value, float) and math.isnan(value) else value
    return value if isinstance(value, str | int | float | bool) else str(value)
