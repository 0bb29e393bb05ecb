"""Helpers every tabular stage shares: named inputs and outputs, CSV/Parquet I/O, dtype kinds, text tables.

Kept free of module-level pandas imports: plugin modules import this file when `sluice validate`
reads their schemas, and that must not pay for pandas.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.engine.plugin import StageContext, StageFailed, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

PARQUET_SUFFIXES = {".parquet", ".pq"}
# The dtype names a config may ask for; `kind_of` maps every pandas dtype onto one of them.
KINDS = ("int", "float", "bool", "string", "category", "datetime", "other")


def _named(paths: dict[str, Path] | Any, name: str, role: str, stage: str) -> Path:
    if name in paths:
        return paths[name]
    hint = did_you_mean(name, paths)
    known = ", ".join(sorted(paths)) or "none"
    tail = f" (did you mean '{hint}'?)" if hint else ""
    raise StageFailed(f"stage '{stage}' needs an {role} named '{name}'{tail}; it has: {known}")


def input_path(ctx: StageContext, name: str) -> Path:
    return _named(ctx.inputs, name, "input", ctx.stage)


def input_anchor(ctx: StageContext, name: str) -> Mapping[str, str]:
    """What the engine hashed of input `name` for this run (path inside it → BLAKE3); empty if it hashed none."""
    return ctx.input_digests.get(name, {})


def output_path(ctx: StageContext, name: str) -> Path:
    path = _named(ctx.outputs, name, "output", ctx.stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def sole_output(ctx: StageContext, preferred: str) -> Path:
    """The output called `preferred`, or the only output whatever its name."""
    if preferred not in ctx.outputs and len(ctx.outputs) == 1:
        return output_path(ctx, next(iter(ctx.outputs)))
    return output_path(ctx, preferred)


def read_table(path: Path, what: str, *, allow_empty: bool = False) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; unreadable, missing or empty tables fail the stage."""
    import pandas as pd

    if not path.exists():
        raise StageFailed(f"{what} table {path} does not exist")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir() else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise StageFailed(f"{what} table {path} is empty (no header, no rows)") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise StageFailed(f"{what} table {path} cannot be read: {exc}") from None
    if frame.empty and not allow_empty:
        raise StageFailed(f"{what} table {path} has no rows")
    return frame


def read_json(path: Path, what: str) -> Any:
    """A JSON file's content; a missing or malformed file fails the stage with its path."""
    if not path.is_file():
        raise StageFailed(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageFailed(f"{what} {path} is not valid JSON: {exc}") from None


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """Write in the format the output path's suffix names: Parquet for .parquet/.pq, CSV otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if not missing:
        return
    lines = []
    for column in missing:
        hint = did_you_mean(column, [str(c) for c in frame.columns])
        lines.append(f"  {column}" + (f"  (did you mean '{hint}'?)" if hint else ""))
    raise StageFailed(
        f"{what} table lacks {len(missing)} required column(s)",
        "missing columns:\n" + "\n".join(lines) + f"\ncolumns present: {', '.join(map(str, frame.columns))}",
    )


def kind_of(series: pd.Series) -> str:
    """One of KINDS: the coarse type a rule or a test cares about, whatever pandas' exact dtype."""
    import pandas as pd
    from pandas.api import types

    dtype = series.dtype
    if types.is_bool_dtype(dtype):
        return "bool"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if types.is_integer_dtype(dtype):
        return "int"
    if types.is_float_dtype(dtype):
        return "float"
    if types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if types.is_string_dtype(dtype) or types.is_object_dtype(dtype):
        return "string"
    return "other"


def is_numeric_kind(kind: str) -> bool:
    return kind in ("int", "float")


def plain(value: Any) -> Any:
    """numpy scalars as Python ones, so reports stay plain JSON."""
    return value.item() if hasattr(value, "item") else value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned table for StageFailed details: readable in a terminal and in a CI log."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
