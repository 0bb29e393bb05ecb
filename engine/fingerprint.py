"""Canonical hashing of config, params and file contents, with a stat fast path.

BLAKE3: cryptographic (a shared content-addressed store must not collide, even on purpose)
and fast, about 4 GB/s per core and parallel over a memory-mapped file. A file's digest is
remembered in SQLite under (path, size, mtime_ns, inode); a hit needs no read at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat as stat_mod
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from engine.paths import PathEscape, check, follow, real_root

ALGORITHM = "blake3"
_MMAP_FROM = 1 << 20  # below this a plain read beats setting up a mapping
# A file changed within this window of being hashed could keep its size and mtime
# (coarse filesystem clocks); such entries are re-checked, as git does with racy entries.
RACY_NS = 2_000_000_000


def canonical(obj: Any) -> bytes:
    """JSON with sorted keys and no spacing: the same data always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def hash_data(obj: Any) -> str:
    return blake3.blake3(canonical(obj)).hexdigest()


def hash_bytes(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def hash_file(path: Path | str, size: int | None = None) -> str:
    if size is None:
        size = os.stat(path).st_size
    if size >= _MMAP_FROM:
        return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest()
    with open(path, "rb") as f:
        return blake3.blake3(f.read()).hexdigest()


@dataclass(frozen=True)
class Digest:
    """The content hash of a file or a directory; a directory carries its manifest."""

    kind: str  # "file" | "dir"
    value: str
    size: int
    manifest: tuple[tuple[str, str, int, bool], ...] = ()  # (relpath, digest, size, executable)


@dataclass
class HashCache:
    """(path, size, mtime_ns, inode) → digest, kept in an SQLite file; writes go in one batch."""

    db_path: Path
    root: Path
    _rows: dict[str, tuple[int, int, int, str, int]] = field(default_factory=dict)
    _dirty: dict[str, tuple[int, int, int, str, int]] = field(default_factory=dict)
    reads: int = 0  # files actually read: the benchmark reports it
    _real: str = ""  # the root's real path, for the containment checks

    def __post_init__(self) -> None:
        self._real = real_root(self.root)
        if self.db_path.exists():
            try:
                with sqlite3.connect(self.db_path, timeout=30) as db:
                    for row in db.execute("SELECT path, size, mtime_ns, inode, digest, hashed_ns FROM hashes"):
                        self._rows[row[0]] = row[1:]
            except sqlite3.DatabaseError:
                self._rows = {}  # a damaged cache only costs re-hashing; it is rebuilt on save

    def file(self, rel: str, st: os.stat_result | None = None) -> str:
        path = self.root / rel
        st = st or os.stat(path)
        row = self._rows.get(rel)
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns and row[2] == st.st_ino:
            if row[4] - st.st_mtime_ns > RACY_NS:
                return row[3]
        digest = hash_file(path, st.st_size)
        self.reads += 1
        entry = (st.st_size, st.st_mtime_ns, st.st_ino, digest, time.time_ns())
        self._rows[rel] = self._dirty[rel] = entry
        return digest

    def digest(self, rel: str) -> Digest | None:
        """Digest of a workspace file or directory; None if it does not exist.

        PathEscape if it, or anything inside it, leads out of the workspace through a symlink.
        """
        path = self.root / rel
        check(self._real, rel)  # never hash (and so cache) bytes from outside the workspace
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mod.S_ISDIR(st.st_mode):
            return Digest("file", self.file(rel, st), st.st_size)
        manifest = tuple(
            (sub, self.file(f"{rel}/{sub}", fst), fst.st_size, bool(fst.st_mode & 0o100))
            for sub, fst in walk_files(path, self._real, rel)
        )
        value = hash_data([list(m) for m in manifest])
        return Digest("dir", value, sum(m[2] for m in manifest), manifest)

    def save(self) -> None:
        if not self._dirty:
            return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.db_path, timeout=30) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
                " inode INTEGER, digest TEXT, hashed_ns INTEGER)"
            )
            db.executemany(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
                [(k, *v) for k, v in self._dirty.items()],
            )
        self._dirty.clear()


def walk_files(root: Path, within: str | None = None, name: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Files under `root` as (relative POSIX path, stat), sorted, without recursion.

    A symlink is followed only while it stays inside `within` (a real path; by default
    `root`'s own); one that leads out, a loop, or a link to a folder above itself raises
    PathEscape naming `name` (the walked folder as the user wrote it) and the link.
    """
    top = os.path.realpath(root)
    within = within or top
    name = name or str(root)
    # (relative path, real path, real paths of the folders above it): a link into one of those loops
    stack: list[tuple[str, str, tuple[str, ...]]] = [("", top, ())]
    out: list[tuple[str, os.stat_result]] = []
    while stack:
        rel, real, above = stack.pop()
        chain = above + (real,)
        with os.scandir(root / rel if rel else root) as it:
            for entry in it:
                sub = f"{rel}/{entry.name}" if rel else entry.name
                if not entry.is_symlink():
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((sub, os.path.join(real, entry.name), chain))
                    elif entry.is_file(follow_symlinks=False):
                        out.append((sub, entry.stat(follow_symlinks=False)))
                    continue
                try:
                    target = follow(entry.path, within, f"{name}/{sub}")
                except PathEscape as exc:
                    raise PathEscape(name, exc.why) from None
                if target in chain:
                    raise PathEscape(name, f"contains a symlink loop: '{name}/{sub}' -> '{os.readlink(entry.path)}' leads back to a folder above it")
                if entry.is_dir():
                    stack.append((sub, target, chain))
                elif entry.is_file():
                    out.append((sub, entry.stat()))
    out.sort(key=lambda item: item[0])
    return iter(out)
