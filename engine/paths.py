"""Containment: no path the engine reads or writes for a stage leaves its root through a symlink.

A symlink that stays inside the workspace is followed; one that leads out of it (or a loop) is
refused, wherever it sits in the path. Every writer in `engine.execute` and every reader of
stage files (`fingerprint.HashCache.digest`) asks here first, so there is one rule in one place.
A stage's own command can of course write anywhere; what this guards is what the engine does on
its behalf (hash, cache, restore, move into place, delete) because of a symlink in the tree.
"""

from __future__ import annotations

import os
import stat as stat_mod
from pathlib import Path

from sluice.engine.errors import SluiceError


class PathEscape(SluiceError):
    """A workspace path that leads out of the workspace, loops, or is a symlink where none may be."""

    def __init__(self, path: str, why: str, what: str = "path"):
        self.path = path
        self.why = why
        super().__init__(self.describe(what))

    def describe(self, what: str) -> str:
        """`input 'data/raw.csv' resolves outside the workspace through symlink 'data' -> '/x'`."""
        return f"{what} '{self.path}' {self.why}"


def real_root(root: Path) -> str:
    """The real path of a root, computed once per root and passed to the checks below."""
    return os.path.realpath(root)


def inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def follow(path: str, root: str, shown: str) -> str:
    """The real path of the symlink at `path` (named `shown` in errors); PathEscape if it leaves `root` or loops.

    A dangling link is judged by where it points: writing through it would create that file.
    """
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        real = os.path.realpath(path)
    except OSError:
        raise PathEscape(shown, f"cannot be resolved: symlink '{shown}' is a loop") from None
    if not inside(real, root):
        raise PathEscape(shown, f"resolves outside the workspace through symlink '{shown}' -> '{os.readlink(path)}'")
    return real


def check(root: str, rel: str, *, leaf: bool = True, what: str = "path") -> os.stat_result | None:
    """Raise PathEscape if a component of workspace-relative `rel` is a symlink leading out of `root`.

    `root` is a real path (`real_root`). With `leaf=False` the last component is not followed:
    the caller replaces or unlinks that entry itself, which never touches a link's target.
    Components that do not exist yet end the walk: creating them creates real directories.
    Returns the last component's own stat unless it is a link or missing, so a reader needs no
    second stat (this runs for every input and output of every stage, no-op runs included).
    """
    parts = rel.split("/")
    if not leaf:
        parts.pop()
    cur = root
    st = None
    for i, part in enumerate(parts):
        nxt = f"{cur}/{part}"
        try:
            st = os.lstat(nxt)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # EACCES, ELOOP: nothing below can be reached either
            raise PathEscape(rel, f"cannot be reached: {exc.strerror}", what) from None
        if stat_mod.S_ISLNK(st.st_mode):
            try:
                cur = follow(nxt, root, "/".join(parts[: i + 1]))
            except PathEscape as exc:
                raise PathEscape(rel, exc.why, what) from None
            st = None
        else:
            cur = nxt
    return st


def check_output(root: str, rel: str, at: Path) -> None:
    """An output now at `at`, to be moved (or left) at `rel`: its folders stay inside, and it is no symlink.

    Outputs are stored and restored as files and directories; a symlink as an output would be
    cached as its target's bytes and restored as a copy, so it is refused (as DVC does).
    """
    check(root, rel, leaf=False, what="output")
    if os.path.islink(at):
        raise PathEscape(rel, f"is a symlink (-> '{os.readlink(at)}'); a stage must write a file or a directory there", "output")
