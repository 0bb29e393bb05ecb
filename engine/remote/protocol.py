"""The remote store contract: content-addressed objects and run entries under one URL.

    objects/ab/cdef…                 one file's bytes, named by their BLAKE3 digest
    runs/<fp[:2]>/<fp>/<id>.json     a run entry, as the local store keeps it (plus a signature)
    packs/<digest>.json              a lock's entries in one value (pack.py)

A store moves bytes and answers presence questions; it never decides what to trust. Whether an
object is there is asked of the object itself (HEAD), never inferred from a listing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sluice.engine.errors import SluiceError


class RemoteError(SluiceError):
    """The remote could not be reached or refused a request (after bounded retries)."""


class TooBig(RemoteError):
    """A value read with a limit was over it."""


class AlreadyThere(Exception):
    """A conditional write found the key taken: the object was already pushed (by us or anyone)."""


@dataclass(frozen=True)
class Listed:
    """A key seen in a listing, with what the server says about it (for gc and verify only)."""

    key: str
    size: int
    modified: float  # seconds since the epoch; 0 when the backend does not say


@dataclass(frozen=True)
class Unfinished:
    """An upload begun and never completed (an S3 multipart upload whose push died): it holds
    storage, and nothing can read it."""

    key: str
    started: float  # seconds since the epoch
    token: str  # the backend's handle on it (S3's UploadId)


def object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest[2:]}"


def entry_key(fingerprint: str, entry_id: str) -> str:
    return f"{entry_folder(fingerprint)}/{entry_id}.json"


def entry_folder(fingerprint: str) -> str:
    return f"runs/{fingerprint[:2]}/{fingerprint}"


class RemoteStore(Protocol):
    @property
    def url(self) -> str: ...

    def head(self, key: str) -> int | None:
        """The size of the object at `key`, or None when there is none (asked of the key itself)."""
        ...

    def put_file(self, key: str, src: Path, sha256: bytes) -> bool:
        """Upload `src` to `key` once: False when it was already there. `sha256` of the bytes is
        sent as a transport checksum where the backend checks one; the write is all or nothing."""
        ...

    def get_file(self, key: str, dest: Path, size: int | None = None) -> bool:
        """Download `key` to `dest`; False when there is no such key. `size` is what the caller expects
        (its entry says so): a backend may then read it in parallel ranges, and may stop one byte past
        `size`, enough for the caller's hash to find a longer object wrong."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small value (a run entry) all at once."""
        ...

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        """A small value, or None when absent; TooBig when it is over `limit` bytes."""
        ...

    def list(self, prefix: str) -> Iterator[Listed]:
        """Every key under `prefix` (a folder such as `runs/ab/<fp>`), recursively."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; absent is fine."""
        ...

    def unfinished(self) -> Sequence[Unfinished]:
        """Uploads begun and never completed (for `gc`); a backend without such uploads has none."""
        ...

    def abort(self, upload: Unfinished) -> None:
        """Give up an unfinished upload and free what it holds; one already gone is fine."""
        ...

    def requests(self) -> Mapping[str, int]:
        """Requests made so far, by verb (HEAD, GET, PUT, LIST, DELETE, ...), each retry counted."""
        ...
