"""Frozen dataclasses and enums shared by every phase; no I/O, no logic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sluice.engine.errors import Location

SPEC_VERSION = 1


class Decision(Enum):
    """What the planner decided for a stage."""

    RUN = "run"  # execute the stage
    SKIP = "skip"  # outputs are up to date, or the stage is not part of this run
    RESTORE = "restore"  # copy outputs back from the cache instead of running


class Outcome(Enum):
    """What actually happened to a stage in a run."""

    RAN = "ran"  # executed and succeeded
    SKIPPED = "skipped"  # up to date (or not selected); nothing done
    RESTORED = "restored"  # outputs copied back from the cache
    FAILED = "failed"  # executed and failed
    NOT_RUN = "not-run"  # never started: an upstream stage failed, or the run was interrupted


@dataclass(frozen=True)
class SecretRef:
    """Where a stage's secret comes from: exactly one of `env` (a variable name) or `file` (a path)."""

    name: str  # the environment variable (cmd) or `ctx.secrets` key (plugins) the stage sees
    env: str = ""
    file: str = ""  # `~` expanded; relative to the workspace


@dataclass(frozen=True)
class StageSpec:
    """One resolved stage (one matrix instance). Paths are workspace-relative POSIX strings."""

    id: str  # "train", or "report[fold=0]" for a matrix instance
    base: str  # the name under `stages:`
    location: Location
    cmd: str | None = None  # `${outputs.X}` still unresolved: execution points it at a staging path
    uses: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)  # the `with:` block
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # stage ids
    refs: Mapping[str, str] = field(default_factory=dict)  # input name → producing stage id (from ${stages…})
    param_deps: Mapping[str, Any] = field(default_factory=dict)  # dotted param name → value
    matrix: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    # Sources only, never values; not fingerprinted (engine.secret reads them when the stage starts).
    secrets: tuple[SecretRef, ...] = ()
    retries: int = 0
    timeout: float | None = None  # seconds
    cache: bool = True
    desc: str = ""
    # `cmd`, `with` and `env` as written, before `${…}`: fingerprinted with the params they use,
    # so a param change is reported as that, not also as a changed command.
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.uses if self.uses else "cmd"


@dataclass(frozen=True)
class Spec:
    """A resolved pipeline: params applied, matrices expanded, `${…}` interpolated."""

    file: Path
    workspace: Path
    name: str
    params: Mapping[str, Any]
    stages: tuple[StageSpec, ...]
    version: int = SPEC_VERSION


@dataclass(frozen=True)
class Edge:
    upstream: str
    downstream: str
    artifact: str = ""  # the path that flows along the edge; "" for a `needs` edge


@dataclass(frozen=True)
class PlanItem:
    """The planner's answer for one stage: what to do and why."""

    stage: str
    decision: Decision
    reasons: tuple[str, ...]
    fingerprint: str | None = None  # None when it depends on an upstream stage that will run
    # What the decision hashed: input name → {path inside the input ("" for a file) → BLAKE3 hex}.
    # A plugin gets it as `StageContext.input_digests`, to check it reads the very bytes fingerprinted.
    inputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StageResult:
    stage: str
    outcome: Outcome
    reasons: tuple[str, ...] = ()
    seconds: float = 0.0
    attempts: int = 0
    log_path: str = ""
    error: str = ""  # for FAILED: the message; the log tail is read from log_path
    details: str = ""  # a plugin's StageFailed details (e.g. a table of violations), or the engine's hint on a failed cmd
    kept: tuple[str, ...] = ()  # for FAILED: report outputs left in place to read (never cached or locked)


@dataclass(frozen=True)
class RemoteTally:
    """What a run asked of its remote: requests by verb (retries included), and what moved."""

    name: str
    requests: Mapping[str, int]
    fetched_objects: int
    fetched_bytes: int
    pushed_entries: int
    pushed_objects: int
    pushed_bytes: int
    down: str | None  # why the remote was given up on, if it was

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": dict(sorted(self.requests.items())),
            "fetched": {"objects": self.fetched_objects, "bytes": self.fetched_bytes},
            "pushed": {"entries": self.pushed_entries, "objects": self.pushed_objects, "bytes": self.pushed_bytes},
            "down": self.down,
        }


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    results: tuple[StageResult, ...]
    seconds: float
    interrupted: bool = False
    remote: RemoteTally | None = None

    @property
    def failed(self) -> tuple[StageResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.FAILED)
