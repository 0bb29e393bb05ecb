"""The locks of other git revisions, for `sluice gc --rev / --all-branches / --all-tags / --all-commits`.

Read with the `git` binary from the repository that holds the workspace, at the lock's path
relative to the repository's top (the workspace may be a subfolder). A committed lock is
untrusted input: it goes through `LockFile.parse`, the parser and limits of the workspace's own.
Every problem (no git, no repository, an unknown revision, a malformed lock) is raised here,
before gc has decided anything, let alone removed it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NoReturn

from sluice.engine.errors import Location, Problem, SluiceError, SpecError, ToolMissing, did_you_mean
from sluice.engine.limits import Limits
from sluice.engine.state import LockFile

_REGULAR = ("100644", "100755")  # a committed file's modes; 120000 is a symlink, 040000 a folder, 160000 a submodule


@dataclass(frozen=True)
class Choice:
    """Which revisions' locks to keep, as the command line names them."""

    revs: tuple[str, ...] = ()
    all_branches: bool = False  # local branches (refs/heads), not remote-tracking ones
    all_tags: bool = False
    all_commits: bool = False  # every commit reachable from any ref

    def __bool__(self) -> bool:
        return bool(self.revs or self.all_branches or self.all_tags or self.all_commits)

    def flag(self) -> str:
        """The option that asked for git, for messages."""
        if self.revs:
            return f"--rev {self.revs[0]}"
        return "--all-branches" if self.all_branches else "--all-tags" if self.all_tags else "--all-commits"


@dataclass(frozen=True)
class Revision:
    """One revision whose lock gc keeps: as named, the commit it resolved to, the lock's path there."""

    name: str
    commit: str
    lock: str  # the lock's path relative to the repository's top
    found: bool  # False: no lock at that path in this revision, so it keeps nothing extra

    def as_dict(self) -> dict[str, str | None]:
        return {"rev": self.name, "commit": self.commit, "lock": self.lock if self.found else None}


def revision_locks(workspace: Path, choice: Choice, limits: Limits) -> tuple[tuple[Revision, LockFile], ...]:
    """Each chosen revision with its lock (empty when it has none), in the order named; raises on any problem."""
    if not choice:
        return ()
    git = _Git(workspace, choice.flag())
    prefix = git.run("rev-parse", "--show-prefix").rstrip("\n")
    path = f"{prefix}sluice.lock"
    named = [(rev, git.commit(rev)) for rev in choice.revs]
    if choice.all_branches:
        named += git.refs("refs/heads/")
    if choice.all_tags:
        named += git.refs("refs/tags/")
    blobs: dict[str | None, LockFile] = {None: LockFile()}  # many commits (and every tag of one) share a lock's blob
    out: dict[str, tuple[Revision, LockFile]] = {}

    def keep(name: str, commit: str, blob: tuple[str, int] | None) -> None:
        oid = blob[0] if blob else None
        if blob is not None and oid not in blobs:
            blobs[oid] = LockFile.parse(f"{name}:{path}", blob[1], partial(git.call, ("cat-file", "blob", blob[0]), name), limits)
        out[name] = (Revision(name, commit, path, blob is not None), blobs[oid])

    for name, commit in named:
        if name not in out:
            keep(name, commit, git.blob(name, commit, path))
    if choice.all_commits:  # each version of the lock once, named by the first commit (newest first) that has it
        for commit, blob in git.versions(path):
            if blob[0] not in blobs:
                keep(commit, commit, blob)
    return tuple(out.values())


@dataclass(frozen=True)
class _Git:
    workspace: Path
    flag: str  # what the user asked for, named in every message

    def run(self, *args: str, check: bool = True) -> str:
        return self.call(args, "", check).decode("utf-8", "replace")

    def call(self, args: tuple[str, ...], rev: str, check: bool = True, stdin: bytes | None = None) -> bytes:
        """git's stdout (b"" when it failed and `check` is off); `rev` is named in a failure's message."""
        who = f"{self.flag}" + (f" ({rev})" if rev and not self.flag.endswith(f" {rev}") else "")
        exe = shutil.which("git")
        if exe is None:
            raise ToolMissing(f"{who}: git is not installed; gc reads the locks of other revisions with it (apt-get install git)")
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
        try:
            proc = subprocess.run([exe, "-C", str(self.workspace), *args], input=stdin, capture_output=True, env=env, check=False)
        except OSError as exc:
            raise ToolMissing(f"{who}: cannot run git: {exc.strerror}") from None
        if proc.returncode and check:
            said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            why = said[0].removeprefix("fatal: ") if said else f"exit code {proc.returncode}"
            if "not a git repository" in why:
                raise SluiceError(f"{who}: {self.workspace} is not in a git repository ({why})")
            raise SluiceError(f"{who}: git {args[0]} failed: {why}")
        return proc.stdout if proc.returncode == 0 else b""

    def commit(self, rev: str) -> str:
        """The commit `rev` names; an option-like or unknown name is the user's mistake (exit 2)."""
        commit = "" if rev.startswith("-") else self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False).strip()
        if not commit:
            names = [n for n, _ in self.refs("refs/heads/") + self.refs("refs/tags/")]
            raise SpecError([Problem(Location(f"--rev {rev}"), "not a commit in this repository", hint=did_you_mean(rev, names))])
        return commit

    def refs(self, under: str) -> list[tuple[str, str]]:
        """(short name, commit) of each ref under `under`; a tag of something other than a commit names no lock."""
        listed = self.run(
            "for-each-ref", "--format=%(refname:short)%00%(objectname)%00%(objecttype)%00%(*objectname)%00%(*objecttype)", under
        )
        out = []
        for line in listed.splitlines():
            name, oid, kind, peeled, peeled_kind = line.split("\0")
            if kind == "commit":
                out.append((name, oid))
            elif kind == "tag" and peeled_kind == "commit":
                out.append((name, peeled))
        return out

    def versions(self, path: str) -> list[tuple[str, tuple[str, int]]]:
        """(commit, (object id, size)) for every version of the file at `path` in any commit reachable from a ref.

        A commit's lock is the one the last commit to change it left, so the commits that change it (against
        any parent: `-m` shows a merge's own resolution) name every version, in one `git log`."""
        listed = self.call(("log", "--all", "-m", "--no-renames", "--raw", "--no-abbrev", "--format=%x01%H", "--", f":(top){path}"), "")
        found: dict[str, str] = {}  # object id -> the first commit seen with it
        commit = ""
        for line in listed.decode("utf-8", "replace").splitlines():
            if line.startswith("\x01"):
                commit = line[1:]
            elif line.startswith(":") and "\t" in line:
                _, mode, _, oid, status = line.partition("\t")[0].split()
                if status.startswith("D"):
                    continue  # deleted here: nothing to keep
                if mode not in _REGULAR:
                    self._refuse(commit, path, mode)
                found.setdefault(oid, commit)
        sizes = self._sizes(list(found))
        return [(commit, (oid, sizes[oid])) for oid, commit in found.items()]

    def _sizes(self, oids: list[str]) -> dict[str, int]:
        if not oids:
            return {}
        listed = self.call(("cat-file", "--batch-check=%(objectname) %(objectsize)"), "", stdin="\n".join(oids).encode())
        return {oid: int(size) for oid, size in (line.split() for line in listed.decode().splitlines())}

    def _refuse(self, name: str, path: str, mode: str) -> NoReturn:
        what = {"120000": "a symbolic link", "040000": "a folder", "160000": "a submodule"}.get(mode, f"mode {mode}")
        problem = f"is {what} at this revision, not a lock file; gc cannot tell what it keeps"
        raise SpecError([Problem(Location(f"{name}:{path}"), problem)])

    def blob(self, name: str, commit: str, path: str) -> tuple[str, int] | None:
        """(object id, size) of the lock at `path` in `commit`, None when it has none; `name` as the user named it."""
        listed = self.call(("ls-tree", "-l", "-z", "--full-tree", commit, "--", path), name)
        if not listed:
            return None
        meta, _, _ = listed.partition(b"\t")
        mode, _, oid, size = meta.decode().split(maxsplit=3)
        if mode not in _REGULAR:
            self._refuse(name, path, mode)
        return oid, int(size)
