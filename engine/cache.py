"""Content-addressed store: file objects by BLAKE3 digest, and run entries by stage fingerprint.

    objects/ab/cdef…            one file's bytes, read-only
    runs/<fp[:2]>/<fp>/<id>.json  what a stage with fingerprint fp produced (newest tried first)

    tmp/                          temp files being written (`durable.temp_name`: host and pid)

An entry is trusted only when every object it names is present and re-hashes to its name:
a corrupt object is deleted and the next candidate is tried, or the stage runs. Every write
goes through a temp file, fsync and rename, so a crash leaves a temp file, never half an object.

Files go into the store and back out as reflinks where the filesystem can (btrfs, XFS): the
bytes are shared until either side is written, so a big model is not stored twice. The clone
is re-hashed like a copy. Hard links are never used: they share the inode, so an in-place edit
of a restored output would rewrite the cached object every other checkout restores from.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from sluice.engine.durable import Flusher, Pending, atomic_file
from sluice.engine.errors import Location, Problem, SluiceError, SpecError
from sluice.engine.fingerprint import Digest, canonical, hash_bytes, hash_file

_CHUNK = 1 << 20
LINK_ENV = "SLUICE_LINK"
_FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int); fcntl.FICLONE from Python 3.12
# What a filesystem (or a pair of them) says when it cannot clone: not an error, a reason to copy.
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EBADF}
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}
_KERNEL_COPY_FROM = 8 << 20  # below this a read/write loop costs less than reading the copy back to hash it
UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError)  # what RunEntry.load raises


class CacheWriteError(SluiceError):
    """Storing into the cache failed (full disk, read-only folder); the workspace is unaffected."""


class _Changed(Exception):
    """A file's bytes no longer match the digest taken of it moments before."""


class Link(Enum):
    """How a file is put into the store and taken back out (`SLUICE_LINK`, tried in order)."""

    REFLINK = "reflink"  # a copy-on-write clone (FICLONE): no bytes written, edits to either side stay apart
    COPY = "copy"  # the bytes copied while they are hashed


DEFAULT_LINKS = (Link.REFLINK, Link.COPY)


def links_from_env(env: Mapping[str, str] | None = None) -> tuple[Link, ...]:
    """`SLUICE_LINK=reflink,copy` (the default), `copy`, or `reflink` (never copy: a file that
    cannot be cloned fails to restore, and its stage runs, saying why)."""
    raw = (os.environ if env is None else env).get(LINK_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_LINKS
    known = {m.value: m for m in Link}
    chosen: list[Link] = []
    for word in (w.strip() for w in raw.split(",")):
        if word in ("hardlink", "symlink"):
            why = "a restored output would share the cached object, so an in-place edit would corrupt the cache"
            raise SpecError([Problem(Location(f"${LINK_ENV}"), f"'{word}' is not offered: {why}", hint="reflink,copy")])
        if word not in known:
            raise SpecError([Problem(Location(f"${LINK_ENV}"), f"unknown mode {word!r}; expected reflink or copy, e.g. reflink,copy")])
        if known[word] not in chosen:
            chosen.append(known[word])
    return tuple(chosen)


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

    @classmethod
    def load(cls, path: Path) -> RunEntry:
        """Read an entry file; raises one of UNREADABLE when it is not a whole, well-formed entry."""
        return cls.from_json(json.loads(path.read_bytes()))

    @property
    def id(self) -> str:
        """The entry's file name in a store: its outputs' hash, so one result is filed once."""
        return hash_bytes(canonical(self.to_json()["outputs"]))[:16]

    @staticmethod
    def id_from_lock(outputs: Any) -> str | None:
        """The id of the entry a lock's `outputs` describe, or None where the lock cannot tell (a
        folder: its manifest is not in the lock) or is not well formed (a lock is untrusted input)."""
        if not isinstance(outputs, dict) or not outputs:
            return None
        outs: dict[str, tuple[str, Digest]] = {}
        for name, o in outputs.items():
            if not isinstance(o, dict) or o.get("kind") != "file":
                return None
            path, value, size = o.get("path"), o.get("hash"), o.get("size")
            if not (isinstance(name, str) and isinstance(path, str) and isinstance(value, str) and type(size) is int):
                return None
            outs[name] = (path, Digest("file", value, size, ()))
        return RunEntry("", "", outs, 0.0).id

    def objects(self) -> Iterator[str]:
        """The digest of every object this entry needs."""
        for _, d in self.outputs.values():
            yield from (m[1] for m in d.manifest) if d.kind == "dir" else (d.value,)


@dataclass(frozen=True)
class Store:
    root: Path
    flusher: Flusher = field(default_factory=Flusher, compare=False, repr=False)
    links: tuple[Link, ...] = DEFAULT_LINKS

    @classmethod
    def at(cls, root: Path) -> Store:
        """The store at `root`, restoring as `SLUICE_LINK` says: every command's store is made here."""
        return cls(root, links=links_from_env())

    def object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest[2:]

    def object_paths(self) -> Iterator[tuple[str, Path]]:
        """(digest, path) of every object in the store."""
        for shard in sorted((self.root / "objects").glob("??")):
            for path in sorted(shard.iterdir()) if shard.is_dir() else ():
                yield shard.name + path.name, path

    def entry_paths(self) -> Iterator[Path]:
        """Every run entry file in the store."""
        yield from sorted((self.root / "runs").glob("??/*/*.json"))

    def has_object(self, digest: str) -> bool:
        return self._present(digest)

    def adopt(self, tmp: Path, digest: str) -> None:
        """Move `tmp` (in `tmp_dir()`, its bytes already verified to hash to `digest`) in as that object."""
        target = self.object_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)

    def tmp_dir(self) -> Path:
        return self._tmp_dir()

    def _tmp_dir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    # ---- objects

    def put_file(self, src: Path, digest: str, size: int | None = None, batch: Pending | None = None) -> None:
        """Copy `src` in as object `digest`, re-hashing the bytes copied (an edit since hashing is refused).

        With `batch`, the written temp file joins it for the caller to submit; otherwise it is
        submitted at once.
        """
        target = self.object_path(digest)
        try:
            st = target.stat()
        except FileNotFoundError:
            st = None
        if st is not None and (size is None or st.st_size == size):
            _touch(target)  # `sluice gc` spares objects used within its grace period
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        own: Pending = [] if batch is None else batch
        with open(src, "rb") as f, atomic_file(target, tmp_dir=self._tmp_dir(), mode=0o444, defer=own) as out:
            if _transfer(f, out, self.links) != digest:
                raise _Changed(src)
        if batch is None:
            self.flusher.submit(own, f"cache object {target}")

    def put(self, src: Path, digest: Digest, batch: Pending | None = None) -> None:
        if digest.kind == "file":
            self.put_file(src, digest.value, digest.size, batch)
        else:
            for rel, value, size, _ in digest.manifest:
                self.put_file(src / rel, value, size, batch)

    def record(self, workspace: Path, entry: RunEntry) -> None:
        """Store a stage's outputs, then its run entry: an entry never names an object not yet stored.

        The bytes are written here; syncing and renaming them into place happens on the
        flusher's threads. Raises CacheWriteError naming the path and the system's reason (a
        full disk, a read-only folder); a temp file is never left behind.
        """
        batch: Pending = []
        try:
            for path, digest in entry.outputs.values():
                self.put(workspace / path, digest, batch)
            self.save_run(entry, batch)
        except (_Changed, OSError) as exc:
            for tmp, _ in batch:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, _Changed):
                raise CacheWriteError(f"{exc.args[0]} changed while it was being stored in the cache {self.root}") from None
            where = f": {exc.filename}" if exc.filename else ""
            raise CacheWriteError(f"could not write to the cache {self.root}: {exc.strerror or exc}{where}") from None
        self.flusher.submit(batch, f"the outputs of stage '{entry.stage}' in the cache {self.root}")

    def has(self, digest: Digest) -> bool:
        return all(self._present(d) for d in ((digest.value,) if digest.kind == "file" else (m[1] for m in digest.manifest)))

    def _present(self, digest: str) -> bool:
        path = self.object_path(digest)
        self.flusher.settle(path)  # written by this process moments ago, maybe not yet renamed
        return path.exists()

    def _copy_verified(self, digest: str, dest: Path, executable: bool = False) -> bool:
        obj = self.object_path(digest)
        self.flusher.settle(obj)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            src = open(obj, "rb")  # noqa: SIM115  (opened apart from `with` so only a failed open means "not restorable")
        except OSError:  # vanished, or unreadable: either way not restorable
            return False
        with src, open(dest, "wb") as out:
            actual = _transfer(src, out, self.links)
        if actual != digest:
            _discard(obj)  # corrupt or short: never offer it again
            _discard(dest)
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

    def save_run(self, entry: RunEntry, batch: Pending | None = None, durable: bool = True) -> None:
        """File `entry`; `durable=False` for a copy of one kept elsewhere (a remote's): all or nothing
        still, but not synced to disk, since a copy lost in a crash is fetched again and a torn one is
        skipped as unreadable."""
        body = entry.to_json()
        target = self.run_path(entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not durable:
            with atomic_file(target, tmp_dir=self._tmp_dir(), sync=False) as f:
                f.write(canonical(body))
            return
        own: Pending = [] if batch is None else batch
        with atomic_file(target, tmp_dir=self._tmp_dir(), defer=own) as f:
            f.write(canonical(body))
        if batch is None:
            self.flusher.submit(own, f"run entry {target}")

    def run_path(self, entry: RunEntry) -> Path:
        return self._runs(entry.fingerprint) / f"{entry.id}.json"

    def candidates(self, fingerprint: str) -> Iterator[RunEntry]:
        """Run entries for a fingerprint, newest first; unreadable ones are skipped."""
        folder = self._runs(fingerprint)
        self.flusher.settle(folder)  # this process's own entries, still being synced
        if not folder.is_dir():
            return
        entries = []
        for path in folder.glob("*.json"):
            try:
                entries.append(RunEntry.load(path))
            except UNREADABLE:
                continue
        yield from sorted(entries, key=lambda e: e.created, reverse=True)

    def lookup(self, fingerprint: str) -> RunEntry | None:
        """The newest entry whose objects are all present (full verification happens on restore)."""
        return next((e for e in self.candidates(fingerprint) if all(self.has(d) for _, d in e.outputs.values())), None)


def _transfer(src: BinaryIO, out: BinaryIO, links: tuple[Link, ...]) -> str:
    """Give `out` the bytes of `src` by the first mode that works; the BLAKE3 digest of what `out` holds.

    A clone is hashed by reading it back: what is verified is the new file, never the source.
    """
    for mode in links:
        if mode is Link.COPY:
            if os.fstat(src.fileno()).st_size >= _KERNEL_COPY_FROM and _kernel_copy(src, out):
                return hash_file(out.name)  # read back from the page cache, on every core
            return _copy_hashing(src, out)
        if reflink(src, out):
            return hash_file(out.name)
    raise OSError(errno.EOPNOTSUPP, f"{LINK_ENV}={','.join(m.value for m in links)}, and this filesystem cannot reflink", out.name)


def reflink(src: BinaryIO, out: BinaryIO) -> bool:
    """Make `out` a copy-on-write clone of `src` (Linux FICLONE); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        fcntl.ioctl(out.fileno(), _FICLONE, src.fileno())
    except OSError as exc:
        if exc.errno in _NO_CLONE:
            return False
        raise
    return True


def _kernel_copy(src: BinaryIO, out: BinaryIO) -> bool:
    """Copy all of `src` into the empty `out` inside the kernel (copy_file_range: no trip through
    Python's buffers); False, with `out` left empty, where the kernel cannot."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    try:
        while copy(src.fileno(), out.fileno(), _CHUNK * 64):
            pass
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
        src.seek(0)
        out.seek(0)
        out.truncate()
        return False
    return True


def _copy_hashing(src: BinaryIO, out: BinaryIO | None) -> str:
    """Copy `src` to `out` (None: only read), returning the BLAKE3 digest of exactly the bytes copied."""
    h = blake3.blake3()
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        if out is not None:
            out.write(chunk)
    return h.hexdigest()


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # another user's object in a shared cache: gc may then take it sooner, never wrongly
        os.utime(path)


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache: verification still refuses the object every time
        path.unlink(missing_ok=True)
