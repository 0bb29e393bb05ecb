"""The "last accepted" record a gating stage keeps in its state directory between runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.plugin import StageContext, write_json
from stages._tables import read_json

ACCEPTED_FILE = "accepted.json"


def read_accepted(ctx: StageContext) -> dict[str, Any] | None:
    path = ctx.state_dir / ACCEPTED_FILE
    return read_json(path, "the last accepted record") if path.is_file() else None


def write_accepted(ctx: StageContext, record: dict[str, Any]) -> Path:
    """Replaces the record atomically, so an interrupted run leaves the previous one intact."""
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.state_dir / ACCEPTED_FILE
    scratch = path.with_suffix(".tmp")
    write_json(scratch, record)
    scratch.replace(path)
    return path
