"""The "last accepted" record a gating stage keeps in its state directory between runs, and strict JSON for reports."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sluice.engine.plugin import StageContext, StageFailed, write_json
from sluice.stages._tables import read_json

ACCEPTED_FILE = "accepted.json"


def write_strict_json(path: Path, data: Any) -> None:
    """`write_json`, refusing NaN and infinities: they are not JSON, and strict readers reject the file.

    Stages turn undefined figures into null with a reason before writing; reaching a non-finite
    number here is a bug, reported with the key path that holds it.
    """
    where = _non_finite(data, "")
    if where is not None:
        raise StageFailed(f"internal error: the report for {path.name} holds a non-finite number at {where or 'top level'}")
    write_json(path, data)


def _non_finite(data: Any, at: str) -> str | None:
    if isinstance(data, float) and not math.isfinite(data):
        return at
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list | tuple) else ()
    for key, value in items:
        found = _non_finite(value, f"{at}.{key}" if at else str(key))
        if found is not None:
            return found
    return None


def read_accepted(ctx: StageContext) -> dict[str, Any] | None:
    path = ctx.state_dir / ACCEPTED_FILE
    return read_json(path, "the last accepted record") if path.is_file() else None


def write_accepted(ctx: StageContext, record: dict[str, Any]) -> Path:
    """Replaces the record atomically, so an interrupted run leaves the previous one intact."""
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.state_dir / ACCEPTED_FILE
    scratch = path.with_suffix(".tmp")
    write_strict_json(scratch, record)
    scratch.replace(path)
    return path
