"""Crash-safe writes (temp name, fsync, rename, fsync the folder) and removal of what a crash left.

A temp name carries the writer's host and pid, `<stem>+<host>+<pid>+<token>.tmp`, so a later
process can tell a dead writer's leftover from a live writer's file in progress, even in a
cache folder that several checkouts (or hosts) share. The random token keeps names unique
across the threads of one process without any shared counter.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# A temp file this old is a leftover whoever wrote it: no write takes an hour. Also the
# minimum age of an object `sluice gc` may delete (a concurrent run may be about to name it).
GRACE_SECONDS = 3600.0

_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", os.uname().nodename) or "host"
# ours: `<stem>+<host>+<pid>+<token>.tmp`; older Sluice wrote `.<name>.<pid>.tmp` and `<pid>-<ns>`
_OURS = re.compile(r"\+(?P<host>[A-Za-z0-9.-]+)\+(?P<pid>\d{1,10})\+[0-9a-f]+\.tmp$")
_LEGACY_LOCAL = re.compile(r"^\..+\.(?P<pid>\d{1,10})\.tmp$")


def temp_name(stem: str) -> str:
    """A name no other process or thread will pick, that says who wrote it."""
    return f"{stem}+{_HOST}+{os.getpid()}+{secrets.token_hex(6)}.tmp"


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` survive a power cut; a no-op where the filesystem can't."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS):
            raise
    finally:
        os.close(fd)


Pending = list[tuple[Path, Path]]  # (temp file written, its final name), in the order to rename


@contextmanager
def atomic_file(
    path: Path, *, tmp_dir: Path | None = None, sync: bool = True, mode: int | None = None, defer: Pending | None = None
) -> Iterator[BinaryIO]:
    """Write `path` through a temp file in `tmp_dir` (default: next to it; same filesystem either way).

    Readers see the old file or the new one, never half of it; on any error the temp file is
    removed and the error raised. `sync` makes the new content survive a crash. With `defer`,
    the written temp file is appended there for a Flusher to sync and rename, instead.
    """
    folder = tmp_dir or path.parent
    tmp = folder / temp_name(f".{path.name}" if tmp_dir is None else path.name[:40])
    try:
        with open(tmp, "wb") as f:
            yield f
            if sync and defer is None:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if defer is not None:
            defer.append((tmp, path))
            return
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


class Flusher:
    """Finishes deferred writes off the caller's thread: fsync each temp, rename in order, fsync the folders.

    An fsync waits for the disk (~4 ms here); from several threads the filesystem commits many
    at once, so a chain of small stages pays about 1 ms a stage for durability instead of 15.
    `settle` gives readers in this process their own writes; interpreter exit waits for the rest.
    """

    THREADS = 8

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[Future[None], tuple[Path, ...]] = {}

    def submit(self, batch: Pending, what: str) -> None:
        """Make `batch` durable and visible, in order; a failure is logged as a warning about `what`."""
        if not batch:
            return
        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="sluice-fsync")
            fut = self._pool.submit(_finish, list(batch), what)
            self._pending[fut] = tuple(target for _, target in batch)
        fut.add_done_callback(self._forget)

    def _forget(self, fut: Future[None]) -> None:
        with self._guard:
            self._pending.pop(fut, None)

    def settle(self, under: Path | None = None) -> None:
        """Wait for pending writes to `under` (a file or a folder), or for all of them."""
        with self._guard:
            waits = [f for f, targets in self._pending.items() if under is None or any(t == under or under in t.parents for t in targets)]
        for fut in waits:
            fut.result()


def _finish(batch: Pending, what: str) -> None:
    try:
        for tmp, _ in batch:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, target in batch:
            os.replace(tmp, target)
        for folder in dict.fromkeys(target.parent for _, target in batch):
            fsync_dir(folder)
    except OSError as exc:
        for tmp, _ in batch:
            _unlink(tmp)
        logging.getLogger("sluice").warning("sluice: warning: could not store %s: %s: %s", what, exc.strerror or exc, exc.filename or "")


def atomic_write(path: Path, data: bytes, *, sync: bool = True, tmp_dir: Path | None = None, mode: int | None = None) -> None:
    with atomic_file(path, tmp_dir=tmp_dir, sync=sync, mode=mode) as f:
        f.write(data)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only or vanished folder: nothing more we can do
        path.unlink(missing_ok=True)


def writer_alive(name: str) -> bool | None:
    """Whether the process that wrote temp file `name` still runs: None when we can't tell."""
    m = _OURS.search(name)
    if m is not None and m["host"] != _HOST:
        return None  # another host's pid means nothing here
    m = m or _LEGACY_LOCAL.match(name)
    if m is None:
        return None
    pid = int(m["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, under another user
    return True


def is_leftover(path: Path, now: float, grace: float = GRACE_SECONDS) -> bool:
    """A temp file whose writer is dead on this host, or older than the grace period."""
    alive = writer_alive(path.name)
    if alive is False:
        return True
    if alive is True:
        return False
    try:
        return now - path.lstat().st_mtime > grace
    except OSError:
        return False


def sweep_temps(folder: Path, pattern: str = "*", grace: float = GRACE_SECONDS) -> int:
    """Remove leftover temp files matching `pattern` in `folder`; how many went."""
    try:
        candidates = [p for p in folder.glob(pattern) if p.name.endswith(".tmp") or _bare_legacy(p.name)]
    except OSError:
        return 0
    now = time.time()
    gone = 0
    for path in candidates:
        if is_leftover(path, now, grace):
            remove_tree(path)
            gone += 1
    return gone


def _bare_legacy(name: str) -> bool:
    return re.fullmatch(r"\d+-\d+", name) is not None  # the cache's old `<pid>-<monotonic ns>`


def remove_tree(path: Path) -> None:
    """Remove a file or folder, read-only entries included; never raises."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path)
