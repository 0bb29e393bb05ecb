"""Content-addressed store: file objects by BLAKE3 digest, and run entries by stage fingerprint.

    objects/ab/cdef…            one file's bytes, read-only
    runs/<fp[:2]>/<fp>/<id>.json  what a stage with fingerprint fp produced (newest tried first)

An entry is trusted only when every object it names is present and re-hashes to its name:
a corrupt object is deleted and the next candidate is tried, or the stage runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from engine.fingerprint import Digest, canonical, hash_bytes

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RunEntry:
    """Outputs of one successful execution: output name → (path, digest)."""

    fingerprint: str
    stage: str
    outputs: Mapping[str, tuple[str, Digest]]
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "stage": self.stage,
            "created": self.created,
            "outputs": {
                name: {"path": path, "kind": d.kind, "hash": d.value, "size": d.size, "manifest": [list(m) for m in d.manifest]}
                for name, (path, d) in self.outputs.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunEntry:
        outs = {
            name: (o["path"], Digest(o["kind"], o["hash"], o["size"], tuple(tuple(m) for m in o["manifest"])))
            for name, o in data["outputs"].items()
        }
        return cls(data["fingerprint"], data["stage"], outs, data["created"])


@dataclass(frozen=True)
class Store:
    root: Path

    def _object(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest[2:]

    def _tmp(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{os.getpid()}-{time.monotonic_ns()}"

    # ---- objects

    def put_file(self, src: Path, digest: str) -> None:
        target = self._object(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp()
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)  # atomic: a reader never sees half an object

    def put(self, src: Path, digest: Digest) -> None:
        if digest.kind == "file":
            self.put_file(src, digest.value)
        else:
            for rel, value, _, _ in digest.manifest:
                self.put_file(src / rel, value)

    def has(self, digest: Digest) -> bool:
        if digest.kind == "file":
            return self._object(digest.value).exists()
        return all(self._object(m[1]).exists() for m in digest.manifest)

    def _copy_verified(self, digest: str, dest: Path, executable: bool = False) -> bool:
        obj = self._object(digest)
        h = blake3.blake3()
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(obj, "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        except FileNotFoundError:
            return False
        if h.hexdigest() != digest:
            obj.unlink(missing_ok=True)  # corrupt: never offer it again
            dest.unlink(missing_ok=True)
            return False
        os.chmod(dest, 0o755 if executable else 0o644)
        return True

    def restore(self, digest: Digest, dest: Path) -> bool:
        """Copy an output out of the store into `dest` (a staging path), verifying every byte."""
        if digest.kind == "file":
            return self._copy_verified(digest.value, dest)
        dest.mkdir(parents=True, exist_ok=True)
        return all(self._copy_verified(value, dest / rel, exe) for rel, value, _, exe in digest.manifest)

    # ---- run entries

    def _runs(self, fingerprint: str) -> Path:
        return self.root / "runs" / fingerprint[:2] / fingerprint

    def save_run(self, entry: RunEntry) -> None:
        data = canonical(entry.to_json())
        folder = self._runs(entry.fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{hash_bytes(canonical(entry.to_json()['outputs']))[:16]}.json"
        tmp = self._tmp()
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def candidates(self, fingerprint: str) -> Iterator[RunEntry]:
        """Run entries for a fingerprint, newest first; unreadable ones are skipped."""
        folder = self._runs(fingerprint)
        if not folder.is_dir():
            return
        entries = []
        for path in folder.glob("*.json"):
            try:
                entries.append(RunEntry.from_json(json.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        yield from sorted(entries, key=lambda e: e.created, reverse=True)

    def lookup(self, fingerprint: str) -> RunEntry | None:
        """The newest entry whose objects are all present (full verification happens on restore)."""
        return next((e for e in self.candidates(fingerprint) if all(self.has(d) for _, d in e.outputs.values())), None)
