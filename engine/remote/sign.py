"""Signed run entries: HMAC-SHA256 over the entry's canonical JSON, with a key from SLUICE_REMOTE_KEY.

Objects need no signature (they are checked by content); a run entry is the poisoning vector:
it says "these inputs produce those bytes". A remote with `require_signed: true` makes clients
ignore entries that are unsigned or whose signature does not verify under their key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from enum import Enum
from typing import Any

from sluice.engine.fingerprint import canonical

KEY_ENV = "SLUICE_REMOTE_KEY"
ALG = "hmac-sha256"


class Seal(Enum):
    SIGNED = "signed"  # a signature that verifies under our key
    UNSIGNED = "unsigned"  # no signature at all
    UNCHECKED = "unchecked"  # signed, but we hold no key to check it with
    BAD = "bad"  # a signature that does not verify under our key, or is malformed


def key_from_env(env: Mapping[str, str] | None = None) -> bytes | None:
    raw = (os.environ if env is None else env).get(KEY_ENV, "")
    return raw.encode() if raw else None


def _mac(key: bytes, body: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical(dict(body)), hashlib.sha256).hexdigest()


def seal(body: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    """The entry as pushed: signed when there is a key."""
    out = dict(body)
    if key is not None:
        out["signature"] = {"alg": ALG, "value": _mac(key, body)}
    return out


def accepted(seal_: Seal, required: bool) -> bool:
    """`require_signed`: only entries that verify; otherwise anything but a signature that fails."""
    return seal_ is Seal.SIGNED if required else seal_ is not Seal.BAD


def check(doc: Mapping[str, Any], key: bytes | None) -> tuple[Seal, dict[str, Any]]:
    """How `doc` is signed, and the entry body without its signature."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = doc.get("signature")
    if sig is None:
        return Seal.UNSIGNED, body
    if not isinstance(sig, dict) or sig.get("alg") != ALG or not isinstance(sig.get("value"), str):
        return Seal.BAD, body
    if key is None:
        return Seal.UNCHECKED, body
    return (Seal.SIGNED if hmac.compare_digest(sig["value"], _mac(key, body)) else Seal.BAD), body
