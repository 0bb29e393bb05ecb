"""A lock's run entries in one remote value, and its small objects in a few: a fresh checkout reads
them in a handful of GETs, not one or two per stage.

    packs/<name>.json      {"version": 1, "entries": [<entry as filed under runs/>, ...],
                            "bundles": [{"key": "bundles/<blake3>.bin", "size": N,
                                         "objects": [[<digest>, <offset>, <size>], ...]}, ...]}
    bundles/<blake3>.bin   small objects' bytes, one after another

The name is the lock section's digest (`state.section_digest`: its fingerprints and outputs), so a
checkout of a commit finds the pack written when that commit's lock was produced. A pack is a
transport, never a trust record: each entry in it passes exactly the checks of one fetched alone
(shape, the stage's outputs, the signing policy, the id the lock records, every object it names
present), and anything a pack lacks or gets wrong is looked up entry by entry instead.

A bundle is a transport too. Each request to an S3 server costs the client about as much as a
megabyte of data, so objects up to SMALL_OBJECT are also sent grouped: by the first hex digit of
their digest (a lock that changes in one stage changes one group), a group cut into bundles of
BUNDLE_BYTES, each named by the BLAKE3 of its bytes, so an unchanged group is not sent again. A
slice counts only once its bytes hash to the digest it claims; any other is fetched on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

VERSION = 1
BUNDLE_BYTES = 16 * 2**20  # one bundle at most: several are read at once
BUNDLED = 512 * 2**20  # a pack bundles at most this much; the rest is fetched object by object
_HEX = re.compile(r"^[0-9a-f]{64}$")
_BUNDLE_KEY = re.compile(r"^bundles/[0-9a-f]{64}\.bin$")


@dataclass(frozen=True)
class Bundle:
    key: str
    size: int
    objects: tuple[tuple[str, int, int], ...]  # (digest, offset, size)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "objects": [list(o) for o in self.objects]}


def pack_key(name: str) -> str:
    return f"packs/{name}.json"


def bundle_key(blake3_hex: str) -> str:
    return f"bundles/{blake3_hex}.bin"


def pack_body(docs: Iterable[Mapping[str, Any]], bundles: Iterable[Bundle] = ()) -> bytes:
    doc: dict[str, Any] = {"version": VERSION, "entries": list(docs)}
    if listed := [b.as_json() for b in bundles]:
        doc["bundles"] = listed
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def groups(objects: Iterable[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    """The (digest, size) of small objects as they go into bundles: by first hex digit, sorted, each
    group cut at BUNDLE_BYTES, BUNDLED in all at most (what is left out is fetched on its own)."""
    by_digit: dict[str, list[tuple[str, int]]] = {}
    for digest, size in sorted(set(objects)):
        by_digit.setdefault(digest[0], []).append((digest, size))
    out: list[list[tuple[str, int]]] = []
    total = 0
    for digit in sorted(by_digit):
        current: list[tuple[str, int]] = []
        filled = 0
        for digest, size in by_digit[digit]:
            if total + size > BUNDLED:
                break
            if current and filled + size > BUNDLE_BYTES:
                out.append(current)
                current, filled = [], 0
            current.append((digest, size))
            filled += size
            total += size
        if current:
            out.append(current)
    return out


def _doc(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("entries"), list):
        return None
    return doc


def read_pack(data: bytes | None) -> tuple[list[dict[str, Any]], list[Bundle]]:
    """A pack's entry documents, unchecked (each is checked as it is used), and its well-formed bundles
    (a key under bundles/, a size within BUNDLE_BYTES, slices inside it; what a slice holds is checked
    when it is read); ([], []) for anything else. The bytes are parsed once."""
    doc = _doc(data)
    if doc is None:
        return [], []
    entries = [e for e in doc["entries"] if isinstance(e, dict)]
    listed = doc.get("bundles")
    return entries, [b for b in map(_bundle, listed if isinstance(listed, list) else ()) if b is not None]


def pack_entries(data: bytes | None) -> list[dict[str, Any]]:
    return read_pack(data)[0]


def pack_bundles(data: bytes | None) -> list[Bundle]:
    return read_pack(data)[1]


def _bundle(b: Any) -> Bundle | None:
    if not isinstance(b, dict):
        return None
    key, size, objects = b.get("key"), b.get("size"), b.get("objects")
    if not isinstance(key, str) or not _BUNDLE_KEY.match(key) or not isinstance(size, int) or not _count(size, BUNDLE_BYTES):
        return None
    slices = tuple(_slices(objects, size)) if isinstance(objects, list) else ()
    return Bundle(key, size, slices) if slices else None


def bundle_keys(data: bytes | None) -> set[str]:
    """The bundle keys a pack names (for gc: a kept pack keeps them)."""
    return {b.key for b in pack_bundles(data)}


def _slices(objects: Sequence[Any], size: int) -> Iterable[tuple[str, int, int]]:
    for o in objects:
        if not (isinstance(o, list) and len(o) == 3 and isinstance(o[0], str) and _HEX.match(o[0])):
            continue
        if _count(o[1], size) and _count(o[2], size) and o[1] + o[2] <= size:
            yield o[0], o[1], o[2]


def _count(value: Any, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most
