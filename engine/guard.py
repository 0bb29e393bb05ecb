"""The engine's side of "stages die with the engine": the watchdog pipe and a journal of running stages.

The journal (`.sluice/running/<run id>.jsonl`) says which stages a run started and saw end. A run
that dies leaves it behind; the next run, holding the workspace lock, reads it, and stops any
process still carrying that run's SLUICE_RUN_ID and the stage's SLUICE_STAGE before it plans.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.engine import watchdog
from sluice.engine.watchdog import run_processes


@dataclass(frozen=True)
class Leftover:
    """A stage a dead run started and never saw end, with the processes still carrying its identity."""

    run_id: str
    stage: str
    started: float
    pgid: int | None
    pids: list[int] | None  # None: no /proc here to tell which processes are its own


class RunGuard:
    """The watchdog pipe and the journal of running stages (`<folder>/<run id>.jsonl`) for one run.

    Both open with the first stage that executes, so a run that executes nothing pays for
    neither; after that each stage costs a few appends and pipe writes, no file created.
    """

    def __init__(self, folder: Path, run_id: str, grace: float):
        self.folder, self.run_id, self.grace = folder, run_id, grace
        self._lock = threading.Lock()
        self._opened = False
        self._journal: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _open(self) -> None:
        with self._lock:
            if self._opened:
                return
            self._opened = True
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._journal = os.open(self.folder / f"{self.run_id}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError:
                self._journal = None  # the watchdog still guards the run; only the next run's check is lost
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", watchdog.__file__, self.run_id, str(self.grace)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    env={"SLUICE_WATCHDOG": self.run_id},
                )
                assert self._proc.stdin is not None
                os.set_blocking(self._proc.stdin.fileno(), False)  # a stalled watchdog must not stall a stage
            except OSError:
                self._proc = None

    def _send(self, line: bytes) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                os.write(self._proc.stdin.fileno(), line)

    def _log(self, record: dict[str, object]) -> None:
        if self._journal is not None:
            with contextlib.suppress(OSError):
                os.write(self._journal, (json.dumps(record) + "\n").encode())

    def starting(self, stage: str) -> None:
        self._open()
        self._log({"stage": stage, "started": time.time()})

    def started(self, stage: str, pgid: int) -> None:
        self._send(b"+%d\n" % pgid)
        self._log({"stage": stage, "pgid": pgid})

    def ended(self, stage: str, pgid: int | None) -> None:
        if pgid is not None:
            self._send(b"-%d\n" % pgid)
        self._log({"stage": stage, "ended": True})

    def close(self) -> None:
        """The run is over: the watchdog leaves without killing anything, the journal goes."""
        if self._proc is not None and self._proc.stdin is not None:
            self._send(b"done\n")
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
            with contextlib.suppress(OSError):
                os.unlink(self.folder / f"{self.run_id}.jsonl")


def leftovers(folder: Path, own_run: str) -> list[Leftover]:
    """Stages that runs other than `own_run` started and never ended, read from their journals."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        run_id = name[: -len(".jsonl")]
        if not name.endswith(".jsonl") or run_id == own_run:
            continue
        open_stages: dict[str, dict[str, Any]] = {}
        try:
            lines = (folder / name).read_bytes().splitlines()
        except OSError:
            continue
        for raw in lines:
            try:
                rec = json.loads(raw)
                stage = rec["stage"]
            except (ValueError, TypeError, KeyError):
                continue  # a line cut short when the engine died
            if rec.get("ended"):
                open_stages.pop(stage, None)
            else:
                open_stages.setdefault(stage, {}).update(rec)
        for stage, rec in open_stages.items():
            pgid = rec.get("pgid") if isinstance(rec.get("pgid"), int) else None
            started = rec.get("started")
            started = float(started) if isinstance(started, (int, float)) else 0.0
            found.append(Leftover(run_id, str(stage), started, pgid, run_processes(run_id, str(stage))))
    return found


def forget_leftovers(folder: Path, own_run: str) -> None:
    for path in folder.glob("*.jsonl"):
        if path.name != f"{own_run}.jsonl":
            path.unlink(missing_ok=True)
