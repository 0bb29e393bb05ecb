"""The lock file (`sluice.lock`), run records and the workspace lock; every write is atomic."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Container, Iterator, Mapping
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

LOCK_VERSION = 2  # 1: one `stages` mapping; 2: a section per pipeline file
DEFAULT_SECTION = "pipeline.yaml"
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

    def section(self, spec_file: Path) -> str:
        """A pipeline file's key in `sluice.lock`: its path relative to the lock's folder."""
        return Path(os.path.relpath(spec_file, self.workspace)).as_posix()

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


Entries = Mapping[str, Mapping[str, Any]]  # stage id → what it last ran with


@dataclass(frozen=True)
class LockFile:
    """`sluice.lock` as one pipeline file sees it: `stages` is its own section, the rest is kept as found.

    Each pipeline file in the lock's folder has a section keyed by its path relative to that
    folder, so `pipeline.yaml` and `deploy.yaml` never erase each other's entries. A version-1
    lock's entries wait in `unclaimed` until a pipeline file with those stage ids claims them.
    """

    stages: Entries = field(default_factory=dict)
    algorithm: str = ALGORITHM
    pipeline: str = DEFAULT_SECTION
    others: Mapping[str, Entries] = field(default_factory=dict)  # the other pipeline files' sections
    unclaimed: Entries = field(default_factory=dict)
    settled: bool = True  # False: the file on disk is version 1, or lacks this section; the next run rewrites it

    @classmethod
    def read(
        cls,
        path: Path,
        shadow: Path | None = None,
        limits: Limits = DEFAULT,
        pipeline: str = DEFAULT_SECTION,
        stage_ids: Container[str] = (),
    ) -> LockFile:
        """Parse `sluice.lock`; `shadow` is a JSON copy keyed by the lock's stat, read instead when it matches.

        The YAML stays the human-readable, committed record; parsing it for a 1,000-stage
        pipeline takes longer than everything else a no-op run does, and JSON parses in C.
        `stage_ids` are the pipeline's stages: those a version-1 lock records become its section.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return cls(pipeline=pipeline)
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        doc: _Document | None = None
        if shadow is not None:
            try:
                cached = json.loads(shadow.read_bytes())
                if cached.get("key") == key:
                    doc = replace(_document(cached), version=int(cached["found"]))
            except (OSError, ValueError, AttributeError, KeyError, TypeError, _BadShape):
                pass
        if doc is None:
            doc = _parse(path, st.st_size, limits)
            if shadow is not None and shadow.parent.is_dir():
                _write_shadow(shadow, key, doc)
        own = doc.sections.get(pipeline)
        pool = dict(doc.unclaimed)
        if own is None:
            own = {sid: pool.pop(sid) for sid in list(pool) if sid in stage_ids}
        others = {k: v for k, v in doc.sections.items() if k != pipeline}
        settled = doc.version == LOCK_VERSION and pipeline in doc.sections
        return cls(own, doc.algorithm, pipeline, others, pool, settled)

    def with_stages(self, stages: Entries) -> LockFile:
        """This pipeline's section replaced, in the current layout; every other section as it was."""
        return replace(self, stages=dict(stages), algorithm=ALGORITHM, settled=True)

    def _document(self) -> _Document:
        return _Document(LOCK_VERSION, self.algorithm, {**self.others, self.pipeline: self.stages}, self.unclaimed)

    def render(self) -> bytes:
        return (_HEADER + yaml.dump(self._document().body(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)).encode()

    def write(self, path: Path, shadow: Path | None = None) -> None:
        data = self.render()
        if path.exists() and path.read_bytes() == data:
            return  # a no-op run leaves the file (and its mtime) alone
        atomic_write(path, data)
        if shadow is not None:
            st = os.stat(path)
            _write_shadow(shadow, [st.st_size, st.st_mtime_ns, st.st_ino], self._document())


@dataclass(frozen=True)
class _Document:
    """The whole lock file: every pipeline file's section and a version-1 lock's unclaimed entries."""

    version: int
    algorithm: str
    sections: Mapping[str, Entries]
    unclaimed: Entries

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"version": LOCK_VERSION, "hash": self.algorithm}
        body["pipelines"] = {k: {"stages": dict(self.sections[k])} for k in sorted(self.sections)}
        if self.unclaimed:
            body["v1"] = {"stages": dict(self.unclaimed)}
        return body


class _BadShape(Exception):
    pass


def _parse(path: Path, size: int, limits: Limits) -> _Document:
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
    try:
        return _document(data)
    except _BadShape as exc:
        raise _lock_error(name, f"{exc}; {_RECOVER}", 1, 1) from None


def _document(data: Any) -> _Document:
    """Check a lock's shape (version 1: `stages`; version 2: `pipelines` and `v1`); drop unusable entries."""
    if not isinstance(data, dict):
        raise _BadShape("the lock file has an unexpected shape")
    version, algorithm = data.get("version"), data.get("hash", ALGORITHM)
    if version not in (1, 2) or isinstance(version, bool):
        raise _BadShape(f"lock file version {version!r} is not supported")
    if not isinstance(algorithm, str):
        raise _BadShape("the lock file's hash is not a name")
    if version == 1:
        return _Document(1, algorithm, {}, _entries(data.get("stages")))
    sections, v1 = data.get("pipelines") or {}, data.get("v1") or {}
    if not isinstance(sections, dict) or not isinstance(v1, dict):
        raise _BadShape("the lock file has an unexpected shape")
    out = {}
    for key, section in sections.items():
        if not isinstance(section, dict):
            raise _BadShape(f"the lock file's section for {key} is not a mapping")
        out[key] = _entries(section.get("stages"))
    return _Document(2, algorithm, out, _entries(v1.get("stages")))


def _write_shadow(shadow: Path, key: list[int], doc: _Document) -> None:
    """`found`: the layout on disk, so a version-1 lock read from the shadow is still rewritten."""
    body = {"key": key, "found": doc.version, **doc.body()}
    atomic_write(shadow, json.dumps(body, separators=(",", ":")).encode(), sync=False)


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


def _entries(stages: Any) -> dict[str, Any]:
    """The entries the planner can compare against; a malformed one counts as no record for its stage."""
    if stages is None:
        return {}
    if not isinstance(stages, dict):
        raise _BadShape("the lock file's stages are not a mapping")
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
