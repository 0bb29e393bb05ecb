"""The lock file (`sluice.lock`), run records and the workspace lock; every write is atomic."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Container, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from sluice.engine import durable
from sluice.engine.errors import Location, Problem, SluiceError, SpecError, WorkspaceBusy
from sluice.engine.fingerprint import ALGORITHM, hash_data
from sluice.engine.limits import DEFAULT, Limits
from sluice.engine.load import load_text
from sluice.engine.model import RunSummary, StageResult
from sluice.engine.paths import check, real_root

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

    @property
    def running(self) -> Path:
        """Journals of the stages each live run has started (engine/guard.py)."""
        return self.meta / "running"

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
    """Readers see the old file or the new one, never half; `sync` for records that must survive a crash.

    A full disk or a read-only folder is a SluiceError naming the file, not a traceback.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.atomic_write(path, data, sync=sync)  # unique temp name, fsync, rename, fsync the folder
    except OSError as exc:
        raise write_error(path, exc) from None


Entries = Mapping[str, Mapping[str, Any]]  # stage id → what it last ran with


def section_digest(section: Mapping[str, Any]) -> str | None:
    """A hash of what a lock section records each stage produced, from what (fingerprints and outputs);
    None when it records nothing, or holds what JSON cannot sort (the lock is untrusted: YAML allows int keys)."""
    recorded = {
        sid: [rec.get("fingerprint"), rec.get("outputs")]
        for sid, rec in section.items()
        if isinstance(rec, Mapping) and isinstance(rec.get("fingerprint"), str)
    }
    if not recorded:
        return None
    try:
        return hash_data(recorded)
    except (TypeError, ValueError):
        return None


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
    parsed_at: tuple[int, int, int] | None = field(default=None, compare=False)  # the lock's stat, when parsed without the shadow

    @classmethod
    def read(
        cls,
        path: Path,
        shadow: Path | None = None,
        limits: Limits = DEFAULT,
        pipeline: str = DEFAULT_SECTION,
        stage_ids: Container[str] = (),
    ) -> LockFile:
        """Parse `sluice.lock`; `shadow` is a JSON copy keyed by the lock's stat, read instead when it matches
        (and refreshed by `write` or `keep_parse` at the end of a run).

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
        parsed_at = None
        if shadow is not None:
            try:
                cached = json.loads(shadow.read_bytes())
                if cached.get("key") == key:
                    doc = replace(_document(cached), version=int(cached["found"]))
            except (OSError, ValueError, AttributeError, KeyError, TypeError, _BadShape):
                pass
        if doc is None:  # reading never writes: `status` must work on a read-only workspace
            doc, parsed_at = _parse(_shown(path), st.st_size, path.read_bytes, limits), (st.st_size, st.st_mtime_ns, st.st_ino)
        return cls._of(doc, pipeline, stage_ids, parsed_at)

    @classmethod
    def parse(cls, name: str, size: int, read: Callable[[], bytes], limits: Limits = DEFAULT) -> LockFile:
        """A lock that is not the workspace's file (one committed at a git revision): the same checks, no shadow.

        `size` is checked against the limit before `read` is called; `name` is where problems are reported.
        """
        return cls._of(_parse(name, size, read, limits), DEFAULT_SECTION, (), None)

    @classmethod
    def _of(cls, doc: _Document, pipeline: str, stage_ids: Container[str], parsed_at: tuple[int, int, int] | None) -> LockFile:
        own = doc.sections.get(pipeline)
        pool = dict(doc.unclaimed)
        if own is None:
            own = {sid: pool.pop(sid) for sid in list(pool) if sid in stage_ids}
        others = {k: v for k, v in doc.sections.items() if k != pipeline}
        settled = doc.version == LOCK_VERSION and pipeline in doc.sections
        return cls(own, doc.algorithm, pipeline, others, pool, settled, parsed_at)

    def entries(self) -> Iterator[Mapping[str, Any]]:
        """Every stage entry the lock holds: every pipeline file's section and a version-1 lock's."""
        for section in (self.stages, *self.others.values(), self.unclaimed):
            yield from section.values()

    def sections(self) -> Iterator[Entries]:
        """Every pipeline file's section."""
        yield self.stages
        yield from self.others.values()

    def with_stages(self, stages: Entries) -> LockFile:
        """This pipeline's section replaced, in the current layout; every other section as it was."""
        return replace(self, stages=dict(stages), algorithm=ALGORITHM, settled=True, parsed_at=None)

    def _document(self) -> _Document:
        return _Document(LOCK_VERSION, self.algorithm, {**self.others, self.pipeline: self.stages}, self.unclaimed)

    def render(self) -> bytes:
        return (_HEADER + yaml.dump(self._document().body(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)).encode()

    def write(self, path: Path, shadow: Path | None = None) -> None:
        data = self.render()
        try:
            if path.read_bytes() == data:
                return  # a no-op run leaves the file (and its mtime) alone
        except OSError:
            pass
        atomic_write(path, data)
        if shadow is not None:
            st = os.stat(path)
            _write_shadow(shadow, (st.st_size, st.st_mtime_ns, st.st_ino), self._document())

    def keep_parse(self, shadow: Path) -> None:
        """After a run that left the lock as it was: save the parse as the shadow, under the stat it was read at."""
        if self.parsed_at is not None and self.settled:
            _write_shadow(shadow, self.parsed_at, self._document())


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


def _parse(name: str, size: int, read: Callable[[], bytes], limits: Limits) -> _Document:
    """A committed lock is untrusted input: bounded, guarded like a spec, and checked entry by entry."""
    if size > limits.lock_bytes:
        raise _lock_error(
            name, f"the lock file is {size:,} bytes, over the limit of {limits.lock_bytes:,} (raise SLUICE_MAX_LOCK_BYTES if it is genuine)"
        )
    try:
        text = read().decode("utf-8")
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


def _write_shadow(shadow: Path, key: tuple[int, int, int], doc: _Document) -> None:
    """`found`: the layout on disk, so a version-1 lock read from the shadow is still rewritten."""
    body = {"key": list(key), "found": doc.version, **doc.body()}
    with contextlib.suppress(OSError, SluiceError):  # only a cache: the next run parses the YAML again
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
        return f"the lock file is not valid YAML: {message[len('invalid YAML: ') :]}; {_RECOVER}"
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


def write_error(path: Path, exc: OSError) -> SluiceError:
    """A full disk or a read-only folder while Sluice records something: one paragraph naming the path."""
    why = exc.strerror or str(exc)
    if isinstance(exc.filename, str) and os.path.abspath(exc.filename) != os.path.abspath(path):
        why = f"{_shown(Path(exc.filename))}: {why}"  # the folder on the way, say, is a file
    return SluiceError(
        f"cannot write {_shown(path)}: {why} (errno {exc.errno}). Free some space or make the folder writable, then run again."
    )


def result_record(r: StageResult) -> dict[str, Any]:
    """One stage's result as run records and `sluice run --json` both write it."""
    return {
        "outcome": r.outcome.value,
        "reasons": list(r.reasons),
        "seconds": round(r.seconds, 3),
        "attempts": r.attempts,
        "log": r.log_path,
        "error": r.error,
        "kept": list(r.kept),
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
        record: dict[str, Any] = json.loads((layout.runs / "latest.json").read_text())
        return record
    except (OSError, ValueError):
        return None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


@contextmanager
def workspace_lock(layout: Layout, run_id: str = "") -> Iterator[None]:
    """Held for the whole of `sluice run`: a second run on the workspace refuses, never corrupts.

    Who holds it (run id, start time, pid) is written into the lock file only once the lock is
    won, and put back as it was when the run is refused (a SpecError) before it ends.
    """
    path = layout.meta / "run.lock"
    # What Sluice writes for itself lives in .sluice/: a symlink must not carry it out of the
    # workspace (sluice.lock is replaced by rename, which replaces a link, never its target).
    check(real_root(layout.workspace), ".sluice", what="Sluice's folder")
    try:
        layout.meta.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0))
            raise WorkspaceBusy(f"another sluice run ({holder}) is using {layout.workspace}; wait for it to finish") from None
        previous, st = os.pread(fd, 4096, 0), os.fstat(fd)
        try:
            _set_holder(fd, json.dumps({"run_id": run_id, "started": time.time(), "pid": os.getpid()}).encode())
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            yield
        except SpecError:  # refused: nothing about this run is left behind, not even a new mtime
            _set_holder(fd, previous)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            raise
    finally:
        os.close(fd)  # closing drops the flock


def _set_holder(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def describe_holder(raw: bytes) -> str:
    """`run 20261201-234102-123, started 23:41:02, pid 123` from a lock file's holder info; PIDs alone
    mean nothing across PID namespaces (containers), so the run id and start time come first."""
    try:
        info = json.loads(raw)
        parts = [f"run {info['run_id']}"] if info.get("run_id") else []
        started = time.localtime(float(info["started"]))
        shown = "%H:%M:%S" if started[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
        parts += [f"started {time.strftime(shown, started)}", f"pid {int(info['pid'])}"]
        return ", ".join(parts)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError):
        pid = re.sub(r"\D", "", raw.decode(errors="replace"))[:12]  # written by an older Sluice: a bare pid
        return f"pid {pid}" if pid else "holder unknown"
