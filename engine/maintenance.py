"""Upkeep of the workspace and the cache: leftovers of crashed runs, `sluice cache verify`, `sluice gc`.

Grace periods, because a cache folder may be shared by checkouts that this one cannot see:
a temp file or object younger than `durable.GRACE_SECONDS` may belong to a write in progress
elsewhere, and a run entry younger than `--keep-days` may be another checkout's only record.
What the locks name (the working tree's and the chosen git revisions', engine/revisions.py) is a
`Keep`, decided in full before gc lists anything.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.engine.cache import UNREADABLE, RunEntry, Store
from sluice.engine.durable import GRACE_SECONDS, remove_tree, sweep_temps
from sluice.engine.errors import SluiceError
from sluice.engine.fingerprint import hash_data, hash_file
from sluice.engine.limits import Limits
from sluice.engine.revisions import Revision
from sluice.engine.state import Layout, LockFile, section_digest

DAY = 86400.0


def sweep_leftovers(layout: Layout, current_run: str | None = None) -> int:
    """Remove what killed runs left; call with the workspace lock held. How many went.

    Staging folders are only written under that lock, so any but `current_run`'s is dead;
    the cache's temp files may be another checkout's write in progress, so only dead writers'.
    """
    gone = 0
    staging = layout.meta / "tmp"
    for path in staging.iterdir() if staging.is_dir() else ():
        if path.name != current_run:
            remove_tree(path)
            gone += 1
    gone += sweep_temps(layout.workspace, f".{layout.lock_file.name}*.tmp")
    gone += sweep_temps(layout.meta, ".*.tmp")
    gone += sweep_temps(layout.runs, ".*.tmp")
    gone += sweep_temps(layout.cache_dir / "tmp")
    return gone


# ---- sluice cache verify


@dataclass(frozen=True)
class Bad:
    """One damaged thing in the store: an object (with expected and actual hash) or a run entry."""

    path: str
    problem: str
    expected: str = ""
    actual: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "problem": self.problem, "expected": self.expected, "actual": self.actual}


@dataclass(frozen=True)
class VerifyReport:
    objects: int
    bytes: int
    entries: int
    bad: tuple[Bad, ...]
    action: str  # what happened to the bad ones: "quarantined" or "deleted"
    quarantine: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.bad,
            "objects": self.objects,
            "bytes": self.bytes,
            "entries": self.entries,
            "action": self.action,
            "quarantine": self.quarantine,
            "bad": [b.as_dict() for b in self.bad],
        }


def verify(store: Store, delete: bool = False) -> VerifyReport:
    """Re-hash every object and read every run entry; move the bad ones out of use."""
    quarantine = store.root / "quarantine"
    bad: list[Bad] = []
    n_objects = n_bytes = n_entries = 0
    for digest, path in store.object_paths():
        n_objects += 1
        try:
            n_bytes += path.stat().st_size
            actual = hash_file(path)
        except OSError as exc:
            actual, why = "", f"unreadable: {exc.strerror}"
        else:
            why = "content does not match its name"
        if actual != digest:
            bad.append(Bad(str(path), why, digest, actual))
            _retire(store.root, path, quarantine, delete)
    for path in store.entry_paths():
        n_entries += 1
        why = _entry_problem(store, path)
        if why:
            bad.append(Bad(str(path), why))
            _retire(store.root, path, quarantine, delete)
    return VerifyReport(n_objects, n_bytes, n_entries, tuple(bad), "deleted" if delete else "quarantined", str(quarantine))


def _entry_problem(store: Store, path: Path) -> str:
    try:
        entry = RunEntry.load(path)
    except UNREADABLE:
        return "not a readable run entry"
    if entry.fingerprint != path.parent.name:
        return f"filed under fingerprint {path.parent.name} but records {entry.fingerprint}"
    for _, d in entry.outputs.values():
        if d.kind == "dir" and hash_data([list(m) for m in d.manifest]) != d.value:
            return f"its manifest for {d.value[:12]}… does not match that digest"
    missing = [o for o in entry.objects() if not store.object_path(o).is_file()]
    return f"names {len(missing)} missing object(s), e.g. {missing[0]}" if missing else ""


def _retire(root: Path, path: Path, quarantine: Path, delete: bool) -> None:
    try:
        if delete:
            path.unlink()
        else:
            dest = quarantine / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SluiceError(f"could not {'delete' if delete else 'quarantine'} {path}: {exc.strerror}") from None


# ---- sluice gc


@dataclass(frozen=True)
class GcReport:
    objects: int  # removed (or, with dry_run, that would be)
    entries: int
    bytes: int
    kept_objects: int
    kept_entries: int
    dry_run: bool
    removed: tuple[str, ...]
    revisions: tuple[Revision, ...] = ()  # the git revisions whose locks were kept too
    uploads: int = 0  # remote only: unfinished uploads of dead pushes given up
    packs: int = 0  # remote only: lock packs removed (remote/pack.py)
    bundles: int = 0  # remote only: bundles of small objects removed (remote/pack.py)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed_objects": self.objects,
            "removed_entries": self.entries,
            "bytes_freed": self.bytes,
            "kept_objects": self.kept_objects,
            "kept_entries": self.kept_entries,
            "aborted_uploads": self.uploads,
            "removed_packs": self.packs,
            "removed_bundles": self.bundles,
            "revisions": [r.as_dict() for r in self.revisions],
            "removed": list(self.removed),
        }


@dataclass(frozen=True)
class Keep:
    """What gc keeps whatever its age: what the workspace's lock and the chosen revisions' locks name.

    Decided in full before gc lists anything, so a lock that cannot be read removes nothing.
    """

    fingerprints: frozenset[str]
    objects: frozenset[str]  # file outputs' digests
    dirs: frozenset[str]  # folder outputs' digests: their objects are named by a run entry's manifest
    revisions: tuple[Revision, ...] = ()
    sections: frozenset[str] = frozenset()  # each lock section's digest: the remote packs to keep

    def names(self, entry: RunEntry) -> bool:
        # an entry carrying a locked folder's manifest is the only record of which objects it needs
        return entry.fingerprint in self.fingerprints or any(d.kind == "dir" and d.value in self.dirs for _, d in entry.outputs.values())


def keep_set(layout: Layout, revisions: Sequence[tuple[Revision, LockFile]] = (), limits: Limits | None = None) -> Keep:
    """The workspace's `sluice.lock` (every pipeline file's section) and the revisions' locks, as one Keep."""
    fingerprints: set[str] = set()
    objects: set[str] = set()
    dirs: set[str] = set()
    sections: set[str] = set()
    for lock in (LockFile.read(layout.lock_file, limits=limits or Limits.from_env()), *(lock for _, lock in revisions)):
        for e in lock.entries():
            fingerprints.add(str(e.get("fingerprint")))
            for out in (e.get("outputs") or {}).values():
                (dirs if out.get("kind") == "dir" else objects).add(str(out.get("hash")))
        sections.update(d for section in lock.sections() if (d := section_digest(section)))
    return Keep(frozenset(fingerprints), frozenset(objects), frozenset(dirs), tuple(r for r, _ in revisions), frozenset(sections))


def gc(keep: Keep, store: Store, keep_days: float, dry_run: bool = False, now: float | None = None) -> GcReport:
    """Remove what neither `keep` nor a run entry newer than `keep_days` names; see the module note."""
    now = time.time() if now is None else now
    keep_after, grace_after = now - keep_days * DAY, now - GRACE_SECONDS
    live = set(keep.objects)  # object digests that must stay
    doomed: list[tuple[Path, int]] = []
    kept_entries = 0
    for path in store.entry_paths():
        try:
            entry: RunEntry | None = RunEntry.load(path)
        except UNREADABLE:
            entry = None
        needed = entry is not None and (keep.names(entry) or entry.created >= keep_after)
        if needed or _mtime(path) >= grace_after:
            live.update(entry.objects() if entry is not None else ())
            kept_entries += 1
        else:
            doomed.append((path, _size(path)))
    # set aside by `cache verify`: nothing can use them, and they were kept only to be looked at
    quarantined = [p for p in sorted((store.root / "quarantine").rglob("*")) if p.is_file()]
    doomed.extend((p, _size(p)) for p in quarantined if "runs" in p.parts)
    n_entries = len(doomed)
    kept_objects = 0
    for digest, path in store.object_paths():
        if digest in live or _mtime(path) >= grace_after:
            kept_objects += 1
        else:
            doomed.append((path, _size(path)))
    doomed.extend((p, _size(p)) for p in quarantined if "runs" not in p.parts)
    if not dry_run:
        for path, _ in doomed:  # entries first: an entry never names an object already gone
            remove_tree(path)
        _prune_empty(store.root / "runs", store.root / "objects", store.root / "quarantine")
        sweep_temps(store.root / "tmp")
    return GcReport(
        len(doomed) - n_entries,
        n_entries,
        sum(s for _, s in doomed),
        kept_objects,
        kept_entries,
        dry_run,
        tuple(str(p) for p, _ in doomed),
        keep.revisions,
    )


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _prune_empty(*roots: Path) -> None:
    for root in roots:
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty
                folder.rmdir()
