"""The lock file (`sluice.lock`), run records and the workspace lock; every write is atomic."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from engine.errors import Location, Problem, SpecError, WorkspaceBusy
from engine.fingerprint import ALGORITHM
from engine.limits import DEFAULT, Limits
from engine.load import load_text
from engine.model import RunSummary, StageResult

LOCK_VERSION = 1
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
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
    def read(cls, path: Path, shadow: Path | None = None, limits: Limits = DEFAULT) -> LockFile:
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
                    return cls(_usable_entries(cached["stages"]), cached["hash"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass
        lock = cls._parse(path, st.st_size, limits)
        if shadow is not None and shadow.parent.is_dir():
            lock._write_shadow(shadow, key)
        return lock

    @classmethod
    def _parse(cls, path: Path, size: int, limits: Limits) -> LockFile:
        """A committed lock is untrusted input: bounded, guarded like a spec, and checked entry by entry."""
        name = _shown(path)
        if size > limits.lock_bytes:
            raise _lock_error(name, f"the lock file is {size:,} bytes, over the limit of {limits.lock_bytes:,} (raise SLUICE_MAX_LOCK_BYTES if it is genuine)")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _lock_error(name, f"the lock file is not UTF-8 text (bad byte at offset {exc.start}); {_RECOVER}") from None
        except OSError as exc:
            raise _lock_error(name, f"cannot read the lock file: {exc.strerror}") from None
        try:
            data = load_text(text, name).data
        except SpecError as exc:
            raise SpecError([replace(p, message=_unreadable(p.message)) for p in exc.problems]) from None
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > LOCK_VERSION:
            raise _lock_error(name, f"written by a newer Sluice (lock version {version}); upgrade Sluice")
        if not isinstance(data, dict) or not isinstance(data.get("stages") or {}, dict) or not isinstance(data.get("hash", ALGORITHM), str):
            raise _lock_error(name, f"the lock file has an unexpected shape; {_RECOVER}", 1, 1)
        if version != LOCK_VERSION:
            raise _lock_error(name, f"lock file version {version!r} is not supported", 1, 1)
        return cls(_usable_entries(data.get("stages") or {}), data.get("hash", ALGORITHM))

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


_RECOVER = "restore it from git or delete it"


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _lock_error(name: str, message: str, line: int = 0, col: int = 0) -> SpecError:
    return SpecError([Problem(Location(name, line, col), message)])


def _unreadable(message: str) -> str:
    if message.startswith("invalid YAML: "):
        return f"the lock file is not valid YAML: {message[len('invalid YAML: '):]}; {_RECOVER}"
    return f"{message}; {_RECOVER}"


def _usable_entries(stages: Any) -> dict[str, Any]:
    """The entries the planner can compare against; a malformed one counts as no record for its stage."""
    if not isinstance(stages, dict):
        raise TypeError("stages is not a mapping")
    return {sid: e for sid, e in stages.items() if isinstance(sid, str) and _usable(e)}


def _usable(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str):
        return False
    parts = [entry.get(k) for k in ("params", "matrix", "inputs", "outputs")]
    if not all(p is None or isinstance(p, dict) for p in parts):
        return False
    inputs, outputs = parts[2] or {}, parts[3] or {}
    return all(
        isinstance(i, dict) and isinstance(i.get("path"), str) and (i.get("hash") is None or isinstance(i.get("hash"), str))
        for i in inputs.values()
    ) and all(isinstance(o, dict) and isinstance(o.get("path"), str) and isinstance(o.get("hash"), str) for o in outputs.values())


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
