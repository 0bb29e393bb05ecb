"""Canonical hashing of config, params and file contents, with a stat fast path.

BLAKE3: cryptographic (a shared content-addressed store must not collide, even on purpose)
and fast, about 4 GB/s per core and parallel over a memory-mapped file. A file's digest is
remembered in SQLite under (path, size, mtime_ns, ctime_ns, inode); a hit needs no read at all.
ctime is in the key because no user can set it back: an edit that restores size and mtime
(`touch -d`, `os.utime`, `cp -p` over the file) still moves it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat as stat_mod
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from sluice.engine.paths import PathEscape, check, follow, real_root

ALGORITHM = "blake3"
_MMAP_FROM = 1 << 20  # below this a plain read beats setting up a mapping
# Git's racy rule: a file whose mtime or ctime is within this window of the moment its hash was
# recorded could change again in the same clock tick (coarse filesystem clocks) and keep every
# stat field; such an entry proves nothing and the file is read again.
RACY_NS = 2_000_000_000
_SCHEMA = 2  # PRAGMA user_version of hashes.db; any other (1 had no ctime) is rebuilt
_Row = tuple[int, int, int, int, str, int]  # size, mtime_ns, ctime_ns, inode, digest, hashed_ns


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
    """(path, size, mtime_ns, ctime_ns, inode) → digest, kept in an SQLite file; writes go in one batch.

    `rehash` distrusts what earlier processes recorded (`--rehash`, `--force`): every file is
    read at least once; what this process itself read and recorded serves again.
    """

    db_path: Path
    root: Path
    rehash: bool = False
    _rows: dict[str, _Row] = field(default_factory=dict)
    _dirty: dict[str, _Row] = field(default_factory=dict)
    reads: int = 0  # files actually read: the benchmark reports it
    _real: str = ""  # the root's real path, for the containment checks
    _rebuild: bool = False  # the file on disk is damaged or of another schema
    _checked: set[str] | None = None  # folders found contained, during steady()

    def __post_init__(self) -> None:
        self._real = real_root(self.root)
        if self.rehash or not self.db_path.exists():
            return
        try:
            with closing(sqlite3.connect(self.db_path, timeout=30)) as db:
                if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA:
                    self._rebuild = True
                    return
                for row in db.execute("SELECT path, size, mtime_ns, ctime_ns, inode, digest, hashed_ns FROM hashes"):
                    self._rows[row[0]] = row[1:]
        except sqlite3.DatabaseError:  # a damaged cache only costs re-hashing
            self._rows, self._rebuild = {}, True

    def file(self, rel: str, st: os.stat_result | None = None) -> str:
        path = self.root / rel
        st = st or os.stat(path)
        row = self._rows.get(rel)
        if (
            row
            and row[0] == st.st_size
            and row[1] == st.st_mtime_ns
            and row[2] == st.st_ctime_ns
            and row[3] == st.st_ino
            and row[5] - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS
        ):
            return row[4]
        recorded = time.time_ns()  # before the read: the digest vouches for bytes read after this
        digest = hash_file(path, st.st_size)
        self.reads += 1
        entry = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest, recorded)
        self._rows[rel] = self._dirty[rel] = entry
        return digest

    def digest(self, rel: str) -> Digest | None:
        """Digest of a workspace file or directory; None if it does not exist.

        PathEscape if it, or anything inside it, leads out of the workspace through a symlink.
        """
        path = self.root / rel
        st = self._contained_stat(rel)  # never hash (and so cache) bytes from outside the workspace
        if st is None:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
        if not stat_mod.S_ISDIR(st.st_mode):
            return Digest("file", self.file(rel, st), st.st_size)
        manifest = tuple(
            (sub, self.file(f"{rel}/{sub}", fst), fst.st_size, bool(fst.st_mode & 0o100)) for sub, fst in walk_files(path, self._real, rel)
        )
        value = hash_data([list(m) for m in manifest])
        return Digest("dir", value, sum(m[2] for m in manifest), manifest)

    @contextmanager
    def steady(self) -> Iterator[None]:
        """While nothing runs (a planning pass), a folder once checked for symlinks is not walked again."""
        self._checked = set()
        try:
            yield
        finally:
            self._checked = None

    def _contained_stat(self, rel: str) -> os.stat_result | None:
        """PathEscape if `rel` leads out of the workspace; else its own stat when at hand (not a link)."""
        if self._checked is None:
            return check(self._real, rel)
        parent = rel.rpartition("/")[0]
        if parent and parent not in self._checked:
            try:
                check(self._real, parent)
            except PathEscape as exc:
                raise PathEscape(rel, exc.why) from None
            self._checked.add(parent)
        path = f"{self._real}/{rel}"
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mod.S_ISLNK(st.st_mode):
            return st
        follow(path, self._real, rel)
        return None

    def save(self) -> None:
        if not self._dirty:
            return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._write()
        except sqlite3.DatabaseError:  # damaged since it was read: start a new file
            self._rebuild = True
            self._write()
        self._dirty.clear()

    def _write(self) -> None:
        if self._rebuild:
            for suffix in ("", "-wal", "-shm"):
                self.db_path.with_name(self.db_path.name + suffix).unlink(missing_ok=True)
            self._rebuild = False
        with closing(sqlite3.connect(self.db_path, timeout=30)) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
                " ctime_ns INTEGER, inode INTEGER, digest TEXT, hashed_ns INTEGER)"
            )
            db.execute(f"PRAGMA user_version = {_SCHEMA}")
            db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)", [(k, *v) for k, v in self._dirty.items()])


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
        chain = (*above, real)
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
                    raise PathEscape(
                        name, f"contains a symlink loop: '{name}/{sub}' -> '{os.readlink(entry.path)}' leads back to a folder above it"
                    )
                if entry.is_dir():
                    stack.append((sub, target, chain))
                elif entry.is_file():
                    out.append((sub, entry.stat()))
    out.sort(key=lambda item: item[0])
    return iter(out)
