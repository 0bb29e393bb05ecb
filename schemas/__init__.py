"""The JSON Schemas: the contract for pipeline files and for each built-in stage's `with:` block."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent


@cache
def load(name: str) -> dict[str, Any]:
    """`load("pipeline")` or `load("stages/util.copy")`: the parsed schema file."""
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return schema
