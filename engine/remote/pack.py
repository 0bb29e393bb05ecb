"""A lock's run entries in one remote value: a fresh checkout reads them in one GET, not one per stage.

    packs/<name>.json    {"version": 1, "entries": [<entry as filed under runs/>, ...]}

The name is the lock section's digest (`state.section_digest`: its fingerprints and outputs), so a
checkout of a commit finds the pack written when that commit's lock was produced. A pack is a
transport, never a trust record: each entry in it passes exactly the checks of one fetched alone
(shape, the stage's outputs, the signing policy, the id the lock records, every object it names
present), and anything a pack lacks or gets wrong is looked up entry by entry instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

VERSION = 1


def pack_key(name: str) -> str:
    return f"packs/{name}.json"


def pack_body(docs: Iterable[Mapping[str, Any]]) -> bytes:
    return json.dumps({"version": VERSION, "entries": list(docs)}, sort_keys=True, separators=(",", ":")).encode()


def pack_entries(data: bytes | None) -> list[dict[str, Any]]:
    """The entry documents a pack holds, unchecked (each is checked as it is used); [] for anything else."""
    if data is None:
        return []
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("entries"), list):
        return []
    return [e for e in doc["entries"] if isinstance(e, dict)]
