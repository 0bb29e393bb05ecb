"""The lock file (`sluice.lock`), run records and the workspace lock; every write is atomic."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from engine.errors import Location, Problem, SpecError, WorkspaceBusy
from engine.fingerprint import ALGORITHM
from engine.model import RunSummary, StageResult

LOCK_VERSION = 1
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_HEADER = "# Written by `sluice run`: what each stage last ran with and produced. Commit it.\n"


def safe_name(stage_id: str) -> str:
    """A stage id as a file name (matrix values may hold '/')."""
    return quote(stage_id, safe="[]=,-_.+")


@dataclass(frozen=True)
class Layout:
    """Where Sluice keeps its files for one workspace."""

    workspace: Path
    cache_dir: Path

    @classmethod
    def for_workspace(cls, workspace: Path, cache_dir: Path | None = None) -> Layout:
        env = os.environ.get("SLUICE_CACHE_DIR")
        chosen = cache_dir or (Path(env) if env else workspace / ".sluice" / "cache")
        return cls(workspace, chosen if chosen.is_absolute() else workspace / chosen)

    @property
    def meta(self) -> Path:
        return self.workspace / ".sluice"

    @property
    def lock_file(self) -> Path:
        return self.workspace / "sluice.lock"

    @property
    def lock_shadow(self) -> Path:
        return self.meta / "lock.json"

    @property
    def hash_db(self) -> Path:
        return self.meta / "hashes.db"

    @property
    def runs(self) -> Path:
        return self.meta / "runs"

    def logs(self, run_id: str) -> Path:
        return self.meta / "logs" / run_id

    def staging(self, run_id: str) -> Path:
        return self.meta / "tmp" / run_id

    def state_dir(self, stage_id: str) -> Path:
        return self.meta / "state" / safe_name(stage_id)


def atomic_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Readers see the old file or the new one, never half; `sync` for records that must survive a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class LockFile:
    """Stage id → what it last ran with: fingerprint, its parts, and output digests."""

    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    algorithm: str = ALGORITHM

    @classmethod
    def read(cls, path: Path, shadow: Path | None = None) -> LockFile:
        """Parse `sluice.lock`; `shadow` is a JSON copy keyed by the lock's stat, read instead when it matches.

        The YAML stays the human-readable, committed record; parsing it for a 1,000-stage
        pipeline takes longer than everything else a no-op run does, and JSON parses in C.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return cls()
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        if shadow is not None:
            try:
                cached = json.loads(shadow.read_bytes())
                if cached.get("key") == key:
                    return cls(cached["stages"], cached["hash"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        lock = cls._parse(path)
        if shadow is not None and shadow.parent.is_dir():
            lock._write_shadow(shadow, key)
        return lock

    @classmethod
    def _parse(cls, path: Path) -> LockFile:
        try:
            data = yaml.load(path.read_text(), Loader=_Loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            loc = Location(str(path), mark.line + 1, mark.column + 1) if mark else Location(str(path))
            raise SpecError([Problem(loc, "the lock file is not valid YAML; restore it from git or delete it")]) from None
        if not isinstance(data, dict) or not isinstance(data.get("stages") or {}, dict):
            raise SpecError([Problem(Location(str(path), 1, 1), "the lock file has an unexpected shape; restore it from git or delete it")])
        if data.get("version") != LOCK_VERSION:
            raise SpecError([Problem(Location(str(path), 1, 1), f"lock file version {data.get('version')!r} is not supported")])
        return cls(data.get("stages") or {}, data.get("hash", ALGORITHM))

    def _write_shadow(self, shadow: Path, key: list[int]) -> None:
        body = {"key": key, "hash": self.algorithm, "stages": self.stages}
        atomic_write(shadow, json.dumps(body, separators=(",", ":")).encode(), sync=False)

    def render(self) -> bytes:
        body = {"version": LOCK_VERSION, "hash": self.algorithm, "stages": dict(self.stages)}
        return (_HEADER + yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)).encode()

    def write(self, path: Path, shadow: Path | None = None) -> None:
        data = self.render()
        if path.exists() and path.read_bytes() == data:
            return  # a no-op run leaves the file (and its mtime) alone
        atomic_write(path, data)
        if shadow is not None:
            st = os.stat(path)
            self._write_shadow(shadow, [st.st_size, st.st_mtime_ns, st.st_ino])


def result_record(r: StageResult) -> dict[str, Any]:
    """One stage's result as run records and `sluice run --json` both write it."""
    return {
        "outcome": r.outcome.value,
        "reasons": list(r.reasons),
        "seconds": round(r.seconds, 3),
        "attempts": r.attempts,
        "log": r.log_path,
        "error": r.error,
    }


def write_run_record(layout: Layout, summary: RunSummary, pipeline_file: str) -> Path:
    record = {
        "run_id": summary.run_id,
        "pipeline": pipeline_file,
        "finished": time.time(),
        "seconds": round(summary.seconds, 3),
        "interrupted": summary.interrupted,
        "stages": {r.stage: result_record(r) for r in summary.results},
    }
    data = json.dumps(record, indent=1).encode()
    path = layout.runs / f"{summary.run_id}.json"
    atomic_write(path, data)
    atomic_write(layout.runs / "latest.json", data)
    return path


def read_last_run(layout: Layout) -> dict[str, Any] | None:
    try:
        return json.loads((layout.runs / "latest.json").read_text())
    except (OSError, ValueError):
        return None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


@contextmanager
def workspace_lock(layout: Layout) -> Iterator[None]:
    """Held for the whole of `sluice run`: a second run on the workspace refuses, never corrupts."""
    layout.meta.mkdir(parents=True, exist_ok=True)
    path = layout.meta / "run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            pid = re.sub(r"\D", "", holder) or "?"
            raise WorkspaceBusy(f"another `sluice run` (pid {pid}) is using {layout.workspace}; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock
