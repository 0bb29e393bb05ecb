"""Request records: checked against the model's features, in columns when the batch is clean.

Most batches are well-formed, so each feature's values are checked as a column (one type scan,
one numpy conversion, min/max bounds) and handed to the model as columns. Any doubt (a missing or
unknown key, a stray type, a value out of range) sends the whole batch through the per-record
check, which names every bad field exactly as before: the fast path decides only "all valid".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from .model import Feature

MAX_PROBLEMS = 20  # reported in full; the rest are counted, so a hostile body gets a small answer


def validate_records(
    payload: Any, features: Sequence[Feature], max_rows: int, max_problems: int = MAX_PROBLEMS, nullable: frozenset[str] = frozenset()
) -> Sequence[Mapping[str, Any]]:
    """Raises RecordErrors with the first `max_problems` bad fields (FastAPI's 422 shape) and a count of all.

    `nullable` names the number features the model answers for when missing (it has an imputer).
    """
    if not isinstance(payload, list):
        raise RecordErrors([_err(("body",), "expected a JSON list of records", "type_error.list")])
    if not payload:
        raise RecordErrors([_err(("body",), "the list of records is empty", "value_error.empty")])
    if len(payload) > max_rows:
        raise RecordErrors([_err(("body",), f"{len(payload)} records; at most {max_rows} per request", "value_error.too_many")])
    rows = _columns(payload, features, nullable)
    return rows if rows is not None else check_each(payload, features, max_problems, nullable)


def check_each(payload: list[Any], features: Sequence[Feature], max_problems: int, nullable: frozenset[str]) -> list[dict[str, Any]]:
    """The per-record check: every bad field named (up to `max_problems`), or the coerced records."""
    known = {f.name for f in features}
    errors = _Problems(max_problems)
    clean: list[dict[str, Any]] = []
    for i, record in enumerate(payload):
        if not isinstance(record, dict):
            errors.append(_err(("body", i), "expected an object keyed by feature name", "type_error.dict"))
            continue
        row: dict[str, Any] = {}
        for feature in features:
            loc = ("body", i, feature.name)
            if feature.name not in record:
                errors.append(_err(loc, f"missing feature '{feature.name}'", "missing"))
                continue
            value, problem = _coerce(record[feature.name], feature, feature.name in nullable)
            if problem:
                errors.append(_err(loc, f"feature '{feature.name}' {problem[0]}", problem[1]))
            row[feature.name] = value
        for extra in sorted(set(record) - known):
            errors.append(_err(("body", i, extra), f"unknown feature '{extra}'", "extra_forbidden"))
        clean.append(row)
    if errors.total:
        raise RecordErrors(errors.report(), errors.total)
    return clean


class HugeInt(str):
    """An integer literal too long for any feature: kept as its text, so parsing never pays for it."""


def parse_json(body: bytes) -> Any:
    """`json.loads` with integers past float range left as HugeInt (Python refuses > 4,300 digits anyway)."""
    return json.loads(body, parse_int=lambda text: HugeInt(text) if len(text) > _MAX_INT_DIGITS else int(text))


_MAX_INT_DIGITS = 310  # float64's largest value has 309 digits
_FLOAT_MAX = {"float16": 65504.0, "float32": 3.4028234663852886e38}
_Problem = tuple[str, str] | None  # (message, type) for the 422 detail


def _coerce(value: Any, feature: Feature, nullable: bool) -> tuple[Any, _Problem]:
    kind = feature.kind
    if value is None:
        if kind == "number" and nullable:
            return math.nan, None  # the model's imputer fills it
        reason = "this model has no imputer" if kind == "number" else feature.dtype
        return None, (f"must not be null: {reason}", "type_error.none")
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, (f"must be a boolean, got {_jtype(value)}", "type_error"))
    if isinstance(value, bool):  # bool is an int in Python, never a number in a JSON API
        return None, (f"must be a {kind}, got boolean", "type_error")
    if isinstance(value, HugeInt):
        return None, (f"is out of range (an integer of {len(value.lstrip('-'))} digits)", "value_error.range")
    if kind == "integer":
        return _integer(value, feature.dtype.lower())
    if kind == "number":
        return _number(value, feature.dtype.lower())
    return (value, None) if isinstance(value, str) else (None, (f"must be a string, got {_jtype(value)}", "type_error"))


def _integer(value: Any, dtype: str) -> tuple[Any, _Problem]:
    if not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        return None, (f"must be an integer, got {_jtype(value)}", "type_error")
    number = int(value)
    low, high = _int_range(dtype)
    if not low <= number <= high:
        return None, (f"is out of range for {dtype}", "value_error.range")
    return number, None


def _number(value: Any, dtype: str) -> tuple[Any, _Problem]:
    if not isinstance(value, (int, float)):
        return None, (f"must be a finite number, got {_jtype(value)}", "type_error")
    try:
        number = float(value)
    except OverflowError:
        return None, ("is out of range for float64", "value_error.range")
    if not math.isfinite(number):
        return None, ("must be a finite number, got number", "type_error")
    if abs(number) > _FLOAT_MAX.get(dtype, math.inf):
        return None, (f"is out of range for {dtype}", "value_error.range")
    return number, None


def _jtype(value: Any) -> str:
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _err(loc: tuple[Any, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


class _Problems:
    """Keeps the first `limit` problems and counts the rest: memory and answer size stay bounded."""

    def __init__(self, limit: int):
        self.limit = limit
        self.kept: list[dict[str, Any]] = []
        self.total = 0

    def append(self, problem: dict[str, Any]) -> None:
        self.total += 1
        if len(self.kept) < self.limit:
            self.kept.append(problem)

    def report(self) -> list[dict[str, Any]]:
        rest = self.total - len(self.kept)
        if not rest:
            return self.kept
        return [*self.kept, _err(("body",), f"and {rest} more problems ({self.total} in all)", "value_error.truncated")]


class RecordErrors(Exception):
    def __init__(self, errors: list[dict[str, Any]], total: int | None = None):
        self.errors = errors
        self.total = len(errors) if total is None else total
        super().__init__("; ".join(e["msg"] for e in errors))


class Rows(Sequence[Mapping[str, Any]]):
    """Validated records held as columns (feature name → list or numpy array), read as records when needed."""

    def __init__(self, columns: Mapping[str, Any], length: int):
        self.columns = columns
        self.length = length

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Rows: ...
    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Rows:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            return Rows({n: c[index] for n, c in self.columns.items()}, len(range(start, stop, step)))
        return {n: _scalar(c[index]) for n, c in self.columns.items()}

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return (self[i] for i in range(self.length))


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _columns(payload: list[Any], features: Sequence[Feature], nullable: frozenset[str]) -> Rows | None:
    """The batch as columns when every record is valid, else None (the per-record check explains)."""
    import numpy as np

    names = {f.name for f in features}
    if not all(type(r) is dict for r in payload) or not all(r.keys() == names for r in payload):
        return None
    columns: dict[str, Any] = {}
    column: Any
    for feature in features:
        values = [r[feature.name] for r in payload]
        kinds = set(map(type, values))
        kind, dtype = feature.kind, feature.dtype.lower()
        if kind == "number":
            allowed = {float, int, type(None)} if feature.name in nullable else {float, int}
            if not kinds <= allowed:
                return None
            try:
                column = np.array(values, dtype=np.float64)  # None becomes NaN: the imputer's to fill
            except OverflowError:
                return None
            finite = np.isfinite(column)
            if type(None) in kinds:
                finite |= np.array([v is None for v in values])
            if not finite.all() or np.nanmax(np.abs(column), initial=0.0) > _FLOAT_MAX.get(dtype, math.inf):
                return None
        elif kind == "integer":
            low, high = _int_range(dtype)
            if kinds != {int} or min(values) < low or max(values) > high:
                return None
            column = values  # Python ints: pandas infers the column's integer type as it did per record
        elif kind == "bool":
            if kinds != {bool}:
                return None
            column = values
        else:
            if kinds != {str}:
                return None
            column = values
        columns[feature.name] = column
    return Rows(columns, len(payload))


def _int_range(dtype: str) -> tuple[int, int]:
    bits = int("".join(c for c in dtype if c.isdigit()) or 64)
    return (0, 2**bits - 1) if dtype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
