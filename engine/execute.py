"""Runs a plan: schedules stages as their inputs become ready, stages outputs, commits atomically.

Each stage runs in a process of its own (a `cmd` under bash, a plugin under
`engine.stage_runner`), in its own process group so a timeout or Ctrl-C stops all of it.
Outputs are written to a staging area and moved into place only on success (a failed plugin
stage's reports, `Port.keep_on_failure`, are moved too, unrecorded, so its verdict can be read);
the store and the run cache are updated after each stage, the lock file once at the end, so a
killed run resumes from the run cache without trusting partial outputs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from sluice.engine.cache import CacheWriteError, RunEntry, Store
from sluice.engine.compile import Pipeline
from sluice.engine.errors import SluiceError
from sluice.engine.fingerprint import Digest, HashCache
from sluice.engine.guard import RunGuard, forget_leftovers, leftovers
from sluice.engine.model import Decision, Outcome, PlanItem, RunSummary, StageResult, StageSpec
from sluice.engine.paths import PathEscape, check, check_output, real_root
from sluice.engine.plan import Plan, Planner, lock_entry
from sluice.engine.remote.sync import RemoteCache
from sluice.engine.secret import Masker, SecretMissing, gather
from sluice.engine.shell import render_cmd
from sluice.engine.stage_runner import payload, stage_context
from sluice.engine.state import Layout, safe_name
from sluice.engine.watchdog import group_alive, terminate

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
# Planned restores under way at once. Their file operations contend (a 100 x 1 MB restore took 0.24-0.26 s
# on 1-2 threads, 0.29-0.31 s on 8); downloads have their own threads (remote.sync).
RESTORE_AHEAD = 2
_STATE = ".state"  # a plugin's staged state_dir, inside its staging folder


def _settle(fut: Future[_Attempt] | None) -> bool:
    """Wait for a restore started ahead that is not used as it is (or cancel it if it has not begun):
    whether it put its outputs in place."""
    if fut is None or fut.cancel():
        return False
    try:
        return fut.result().ok
    except OSError:
        return False


class Reporter(Protocol):
    def stage_started(self, item: PlanItem) -> None: ...
    def stage_finished(self, result: StageResult) -> None: ...
    def stage_note(self, stage: str, message: str) -> None: ...  # something the user should know now


@dataclass
class _Attempt:
    ok: bool
    error: str = ""
    details: str = ""
    interrupted: bool = False
    timed_out: bool = False  # killed half-way: what it staged may be half-written
    kept: tuple[str, ...] = ()  # report outputs moved into place although the stage failed


@dataclass
class Executor:
    pipeline: Pipeline
    planner: Planner
    layout: Layout
    store: Store
    hashes: HashCache
    reporter: Reporter
    run_id: str
    plan: Plan
    jobs: int
    lock_stages: dict[str, Any]
    # stage id → the output names to move into place even when it fails (`Plugin.kept_on_failure`)
    keep_on_failure: Mapping[str, frozenset[str]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    results: dict[str, StageResult] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # written by workers, one key each
    guard: RunGuard | None = field(default=None, init=False)
    # stages decided by the plan itself: when one is skipped or restored, its outputs are what the plan simulated
    _by_plan: set[str] = field(default_factory=set, init=False)
    remote: RemoteCache | None = None  # restores fetch from it; stages that ran are pushed to it

    def run(self) -> RunSummary:
        self.guard = RunGuard(self.layout.running, self.run_id, KILL_GRACE)
        try:
            return self._run()
        finally:
            self.guard.close()

    def _run(self) -> RunSummary:
        started = time.monotonic()
        stages = self.pipeline.stages
        waiting = {sid: len(set(ups)) for sid, ups in self.pipeline.upstream.items()}
        ready = deque(sid for sid, n in waiting.items() if n == 0)
        futures: dict[Future[_Attempt], tuple[str, PlanItem, RunEntry | None, dict[str, Any] | None, float]] = {}

        def complete(result: StageResult) -> None:
            self.results[result.stage] = result
            self.reporter.stage_finished(result)
            for down in self.pipeline.downstream[result.stage]:
                waiting[down] -= 1
                if waiting[down] == 0:
                    ready.append(down)

        with (
            ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="stage") as pool,
            ThreadPoolExecutor(max_workers=RESTORE_AHEAD, thread_name_prefix="restore") as ahead,
        ):
            # A restore reads no inputs: every restore the plan decided starts now, not once its upstream
            # stages are done. Each counts when its stage's turn comes and the plan still stands then;
            # otherwise the stage waits for it to finish (its staging folder is the stage's) and is decided again.
            early = {
                sid: ahead.submit(self._restore, stages[sid], entry)
                for sid, entry in self.plan.restore_from.items()
                if self.plan.items[sid].decision is Decision.RESTORE
            }
            while ready or futures:
                while ready and len(futures) < self.jobs:
                    sid = ready.popleft()
                    started_early = early.pop(sid, None)
                    blocked = [u for u in self.pipeline.upstream[sid] if self.results[u].outcome in (Outcome.FAILED, Outcome.NOT_RUN)]
                    if self.stop.is_set() or blocked:
                        _settle(started_early)
                        halt = "run interrupted" if self.stop.is_set() else f"upstream {blocked[0]} did not succeed"
                        complete(StageResult(sid, Outcome.NOT_RUN, (halt,)))
                        continue
                    item, entry, comps = self._decision(sid)
                    planned = started_early is not None and entry is not None and entry is self.plan.restore_from.get(sid)
                    restored_early = False
                    if not (planned and item.decision is Decision.RESTORE):
                        restored_early = _settle(started_early)
                    if item.decision is Decision.SKIP:
                        if entry is not None and comps is not None and item.fingerprint:
                            self.lock_stages[sid] = lock_entry(item.fingerprint, comps, entry.outputs)
                        # decided again, its outputs match because this run put them there: it was restored
                        early_entry = self.plan.restore_from.get(sid)
                        ours = restored_early and early_entry is not None and (entry is None or entry.id == early_entry.id)
                        complete(StageResult(sid, Outcome.RESTORED if ours else Outcome.SKIPPED, item.reasons))
                        continue
                    self.reporter.stage_started(item)
                    stage = stages[sid]
                    if item.decision is Decision.RESTORE and entry is not None:
                        fut = started_early if planned and started_early is not None else pool.submit(self._restore, stage, entry)
                    else:
                        fut = pool.submit(self._execute, stage, item.inputs)
                    futures[fut] = (sid, item, entry, comps, time.monotonic())
                if not futures:
                    continue
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    sid, item, entry, comps, t0 = futures.pop(fut)
                    try:
                        attempt = fut.result()
                    except OSError as exc:  # a full disk or read-only folder under the stage: its failure, not a crash
                        where = f" {exc.filename}" if exc.filename else ""
                        attempt = _Attempt(False, f"cannot write{where}: {exc.strerror or exc}")
                    if item.decision is Decision.RESTORE and not attempt.ok and not attempt.interrupted:
                        # A corrupt or vanished cache object: run the stage instead.
                        why = (*item.reasons, f"{attempt.error}; running instead")
                        item = replace(item, decision=Decision.RUN, reasons=why)
                        futures[pool.submit(self._execute, stages[sid], item.inputs)] = (sid, item, None, comps, t0)
                        continue
                    complete(self._finish(stages[sid], item, entry, comps, attempt, time.monotonic() - t0))
            for left in early.values():  # an interrupted run: restores that have not begun never will
                left.cancel()
        shutil.rmtree(self.layout.staging(self.run_id), ignore_errors=True)
        ordered = tuple(self.results[sid] for sid in stages if sid in self.results)
        return RunSummary(self.run_id, ordered, time.monotonic() - started, self.stop.is_set())

    def _decision(self, sid: str) -> tuple[PlanItem, RunEntry | None, dict[str, Any] | None]:
        """The plan's answer while nothing upstream changed; otherwise decide again on fresh inputs."""
        planned = self.plan.items.get(sid)
        unchanged = all(
            u in self._by_plan and self.results[u].outcome in (Outcome.SKIPPED, Outcome.RESTORED) for u in self.pipeline.upstream[sid]
        )
        if planned is not None and unchanged and (planned.fingerprint is not None or planned.decision is Decision.SKIP):
            self._by_plan.add(sid)
            return planned, self.plan.restore_from.get(sid), self.plan.components.get(sid)
        return self.planner.decide(sid)

    # ---- after a stage (main thread: the hash cache and lock are not shared with workers)

    def _finish(
        self, stage: StageSpec, item: PlanItem, entry: RunEntry | None, comps: dict[str, Any] | None, attempt: _Attempt, seconds: float
    ) -> StageResult:
        sid = stage.id
        log = str(self._log_path(sid).relative_to(self.layout.workspace))
        if attempt.interrupted:
            return StageResult(sid, Outcome.NOT_RUN, ("run interrupted",), seconds, log_path=log)
        if not attempt.ok:
            self._disown(stage, attempt.kept)
            return StageResult(
                sid, Outcome.FAILED, item.reasons, seconds, self._attempts(sid), log, attempt.error, attempt.details, attempt.kept
            )
        if item.decision is Decision.RESTORE and entry is not None and comps is not None and item.fingerprint:
            self.lock_stages[sid] = lock_entry(item.fingerprint, comps, entry.outputs)
            return StageResult(sid, Outcome.RESTORED, item.reasons, seconds, 0, log)
        moved = self._input_moved(stage, comps)
        if moved:
            error = f"input {moved} changed while the stage ran; its result is not recorded (run again)"
            return StageResult(sid, Outcome.FAILED, item.reasons, seconds, self._attempts(sid), log, error)
        outputs: dict[str, tuple[str, Digest]] = {}
        for name, path in stage.outputs.items():
            try:
                digest = self.hashes.digest(path)
            except PathEscape as exc:  # a link inside an output folder: its bytes must not enter the cache
                return StageResult(sid, Outcome.FAILED, item.reasons, seconds, self._attempts(sid), log, exc.describe("output"))
            if digest is None:
                return StageResult(
                    sid, Outcome.FAILED, item.reasons, seconds, self._attempts(sid), log, f"output {path} vanished after the stage"
                )
            outputs[name] = (path, digest)
        # Decided once every upstream stage had finished, so the fingerprint is exact.
        fp = item.fingerprint
        if fp and comps is not None:
            if stage.cache:
                entry = RunEntry(fp, sid, outputs, time.time())
                try:
                    self.store.record(self.layout.workspace, entry)
                    if self.remote is not None:
                        self.remote.push_later(entry)
                except CacheWriteError as exc:  # the cache only saves time: the stage's true outputs stand
                    logging.getLogger("sluice").warning(
                        "sluice: warning: stage '%s' ran, but %s. Its outputs are in the workspace and recorded"
                        " in the lock; they will not be restorable from the cache.",
                        sid,
                        exc,
                    )
            self.lock_stages[sid] = lock_entry(fp, comps, outputs)
        return StageResult(sid, Outcome.RAN, item.reasons, seconds, self._attempts(sid), log)

    def _disown(self, stage: StageSpec, kept: tuple[str, ...]) -> None:
        """Forget the stage's lock entry if it names a kept report's bytes: it would pass for up to date.

        The entry is an earlier success's; its outputs were deleted before this run, so it can
        match a kept report only if the failure wrote identical bytes (same inputs, --force).
        """
        recorded = (self.lock_stages.get(stage.id) or {}).get("outputs") or {}
        for name, path in stage.outputs.items():
            if path not in kept:
                continue
            try:
                digest = self.hashes.digest(path)
            except PathEscape:
                continue
            if digest is not None and digest.value == (recorded.get(name) or {}).get("hash"):
                self.lock_stages.pop(stage.id, None)
                return

    def _input_moved(self, stage: StageSpec, comps: dict[str, Any] | None) -> str | None:
        """The first input whose bytes differ from those hashed before the stage started, if any.

        The fingerprint (and so the lock and the run cache) names those hashes: if an input changed
        meanwhile (the stage edited it, or someone else did), the stage may have read other bytes.
        """
        for name, path in stage.inputs.items():
            want = ((comps or {}).get("inputs") or {}).get(name, {}).get("hash")
            if want is None:
                continue
            try:
                now = self.hashes.digest(path)
            except PathEscape:
                return path
            if now is None or now.value != want:
                return path
        return None

    def _attempts(self, sid: str) -> int:
        return self.attempts.get(sid, 0)

    # ---- in a worker thread

    def _log_path(self, sid: str) -> Path:
        return self.layout.logs(self.run_id) / f"{safe_name(sid)}.log"

    def _staging(self, sid: str) -> Path:
        return self.layout.staging(self.run_id) / safe_name(sid)

    @cached_property
    def _root(self) -> str:
        return real_root(self.layout.workspace)

    def _check_internal(self, path: Path, what: str) -> None:
        """Sluice's own folders (.sluice/…) must not lead out of the workspace either."""
        check(self._root, path.relative_to(self.layout.workspace).as_posix(), what=what)

    def _restore(self, stage: StageSpec, entry: RunEntry) -> _Attempt:
        try:
            return self._restore_checked(stage, entry)
        except PathEscape as exc:  # a symlink must not let a restore write outside the workspace
            return _Attempt(False, str(exc))

    def _restore_checked(self, stage: StageSpec, entry: RunEntry) -> _Attempt:
        if self.remote is not None and (problem := self.remote.fetch(entry)):
            return _Attempt(False, problem)
        # Each output is staged as one entry of the run's staging folder, not under folders of its own:
        # on a fresh checkout of many small stages, making and removing those was a third of the work.
        base = self.layout.staging(self.run_id)
        self._check_internal(base, "staging folder")
        name = safe_name(stage.id)
        staged = {path: base / f"{name}@{i}" for i, path in enumerate(stage.outputs.values())}  # '@' is quoted in names
        try:
            for path, digest in entry.outputs.values():
                if (tmp := staged.get(path)) is None:
                    continue
                _remove(tmp)  # an earlier attempt's, in this run
                if not self.store.restore(digest, tmp):
                    return _Attempt(False, f"cache object for {path} is missing or corrupt")
            missing = self._move_in(staged)
        finally:
            for tmp in staged.values():
                _remove(tmp)
        if missing:
            return _Attempt(False, f"the cache entry lacks {', '.join(missing)}")
        return _Attempt(True)

    def _execute(self, stage: StageSpec, hashed: Mapping[str, Mapping[str, str]]) -> _Attempt:
        """`hashed`: the input digests the stage was decided on (`PlanItem.inputs`), for its plugin to check."""
        try:
            return self._execute_checked(stage, hashed)
        except PathEscape as exc:  # a symlink must not let the engine write (or delete) outside the workspace
            return _Attempt(False, str(exc))

    def _execute_checked(self, stage: StageSpec, hashed: Mapping[str, Mapping[str, str]]) -> _Attempt:
        ws = self.layout.workspace
        log_path = self._log_path(stage.id)
        staging = self._staging(stage.id)
        self._check_internal(log_path.parent, "log folder")
        self._check_internal(staging, "staging folder")
        for path in stage.outputs.values():
            check_output(self._root, path, ws / path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        attempt = _Attempt(False, "not started")
        with open(log_path, "wb") as log:
            for n in range(stage.retries + 1):
                self.attempts[stage.id] = n + 1
                if n:
                    log.write(f"\n--- retry {n} of {stage.retries} ---\n".encode())
                    log.flush()
                for path in stage.outputs.values():  # stale outputs (an earlier run's or attempt's) must not pass for new ones
                    _remove(ws / path)
                shutil.rmtree(staging, ignore_errors=True)
                for path in stage.outputs.values():
                    (staging / path).parent.mkdir(parents=True, exist_ok=True)
                if stage.uses:
                    self._stage_state(stage, staging)
                attempt = self._attempt_once(stage, staging, log, hashed)
                if attempt.ok:
                    missing = self._commit_outputs(stage, staging)
                    if missing:
                        attempt = _Attempt(False, f"the stage did not write its output {', '.join(missing)}")
                        log.write(f"sluice: {attempt.error}\n".encode())
                        continue
                    if stage.uses:
                        self._commit_state(stage, staging)
                    return attempt
                if attempt.interrupted:
                    return attempt
            if not attempt.timed_out:
                attempt.kept = self._keep_reports(stage, staging, log)
        return attempt

    def _keep_reports(self, stage: StageSpec, staging: Path, log: Any) -> tuple[str, ...]:
        """Move a failed stage's staged reports into place, checked as a commit checks them.

        Only for the reader: the caller records no cache entry and no lock entry for them.
        """
        names = self.keep_on_failure.get(stage.id, frozenset())
        kept = []
        for name, path in stage.outputs.items():
            src = staging / path
            if name not in names or not os.path.lexists(src):
                continue
            try:
                check_output(self._root, path, src)
                dst = self.layout.workspace / path
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            except (PathEscape, OSError) as exc:  # the stage's own failure is the message; this goes to its log
                log.write(f"sluice: report {path} not kept: {exc}\n".encode())
                continue
            kept.append(path)
        return tuple(kept)

    def _attempt_once(self, stage: StageSpec, staging: Path, log: Any, hashed: Mapping[str, Mapping[str, str]]) -> _Attempt:
        ws = self.layout.workspace
        try:
            secrets = gather(stage, ws)  # read now, for this attempt: never kept beyond it
        except SecretMissing as exc:
            log.write(f"sluice: {exc}\n".encode())
            return _Attempt(False, str(exc))
        # SLUICE_RUN_ID and SLUICE_STAGE identify the stage's processes to the watchdog and to the next run.
        env = {**os.environ, **stage.env, "SLUICE_STAGE": stage.id, "SLUICE_WORKSPACE": str(ws), "SLUICE_RUN_ID": self.run_id}
        staged = {n: str((staging / p).relative_to(ws)) for n, p in stage.outputs.items()}
        result_file = staging / ".result.json"
        stdin = None
        if stage.cmd is not None:
            argv = ["bash", "-eo", "pipefail", "-c", render_cmd(stage.cmd, staged)]
            env.update(secrets)
        else:
            argv = [sys.executable, "-m", "sluice.engine.stage_runner"]
            stage_log = logging.getLogger(f"sluice.stage.{stage.id}")
            ctx = stage_context(stage, self.pipeline.spec, staged, staging / _STATE, stage_log, secrets, hashed)
            stdin = payload(ctx, stage.uses or "", result_file, Path(log.name))
        mask = Masker(secrets.values())
        guard = self.guard
        assert guard is not None, "stages run only inside Executor.run"
        guard.starting(stage.id)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ws,
                env=env,
                stdout=subprocess.PIPE if mask else log,  # with secrets, the output is masked on its way to the log
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            guard.ended(stage.id, None)
            return _Attempt(False, f"cannot start the stage: {exc}")
        guard.started(stage.id, proc.pid)
        pump = mask.pump(proc.stdout, log) if mask and proc.stdout is not None else None
        try:
            attempt = self._watch(stage, proc, stdin, result_file, log)
        finally:
            if pump is not None:
                pump.close()
            guard.ended(stage.id, proc.pid)
        if stage.cmd is not None and not (attempt.ok or attempt.interrupted or attempt.timed_out):
            log.flush()
            attempt.details = python_hint(Path(log.name), env.get("PATH", os.defpath))
        if mask:  # a plugin's error text is masked by its runner; a crash report may not be
            attempt.error, attempt.details = mask.text(attempt.error), mask.text(attempt.details)
        return attempt

    def _watch(self, stage: StageSpec, proc: subprocess.Popen[bytes], stdin: bytes | None, result_file: Path, log: Any) -> _Attempt:
        if stdin is not None and proc.stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        deadline = time.monotonic() + stage.timeout if stage.timeout else None

        def stubborn() -> None:
            note = f"sluice: stage {stage.id} ignored SIGTERM; killing it after {KILL_GRACE:g} s"
            log.write(f"\n{note}\n".encode())
            log.flush()
            self.reporter.stage_note(stage.id, note)

        with _ExitWatch(proc) as watch:
            while (rc := watch.wait(0.1)) is None:
                if self.stop.is_set():
                    _kill(proc, stubborn)
                    return _Attempt(False, "interrupted", interrupted=True)
                if deadline and time.monotonic() > deadline:
                    _kill(proc, stubborn)
                    log.write(f"\nsluice: timed out after {stage.timeout:g}s\n".encode())
                    return _Attempt(False, f"timed out after {stage.timeout:g}s", timed_out=True)
        if rc == 0:
            return _Attempt(True)
        if result_file.exists():
            try:
                data = json.loads(result_file.read_text())
                return _Attempt(False, data.get("error", ""), data.get("details", ""))
            except ValueError:
                pass
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        return _Attempt(False, f"{'command' if stage.cmd is not None else stage.uses} {how}")

    def _stage_state(self, stage: StageSpec, staging: Path) -> None:
        """A plugin writes its kept state (e.g. "last accepted metrics") to a copy, like outputs."""
        real, staged = self.layout.state_dir(stage.id), staging / _STATE
        self._check_internal(real, "state folder")
        shutil.rmtree(staged, ignore_errors=True)
        if real.is_dir():
            shutil.copytree(real, staged)
        else:
            staged.mkdir(parents=True)

    def _commit_state(self, stage: StageSpec, staging: Path) -> None:
        """Swap the staged state in only now that the stage and its outputs have succeeded."""
        real, staged = self.layout.state_dir(stage.id), staging / _STATE
        self._check_internal(real, "state folder")  # again: the stage ran in between
        real.parent.mkdir(parents=True, exist_ok=True)
        old = real.with_name(real.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if real.exists():
            os.replace(real, old)
        os.replace(staged, real)
        shutil.rmtree(old, ignore_errors=True)

    def _commit_outputs(self, stage: StageSpec, staging: Path) -> list[str]:
        return self._move_in({path: staging / path for path in stage.outputs.values()})

    def _move_in(self, outputs: Mapping[str, Path]) -> list[str]:
        """Move each output (workspace path → where it was staged) into place; an output written straight
        to its final path counts too.

        Every output is checked (PathEscape) before any is moved: the command may have made a symlink.
        If one is missing, none is moved: the stage failed, and only its reports may be kept.
        """
        ws = self.layout.workspace
        missing, staged = [], []
        for path, src in outputs.items():
            dst = ws / path
            if os.path.lexists(src):
                check_output(self._root, path, src)
                staged.append((src, dst))
            elif os.path.lexists(dst):
                check_output(self._root, path, dst)
            else:
                missing.append(path)
        if missing:
            return missing
        for src, dst in staged:
            _remove(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        return missing


class _ExitWatch:
    """Waits for a child with a pidfd, so its exit is seen at once: `Popen.wait(timeout)` polls
    in growing sleeps and noticed a 3 ms command only after 3.5 to 7.5 ms."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc
        self.fd: int | None = None

    def __enter__(self) -> _ExitWatch:
        try:
            self.fd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.fd = None  # no pidfd (old kernel, not Linux): fall back to polling
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def wait(self, seconds: float) -> int | None:
        """The exit code, or None if the child still runs after `seconds`."""
        if self.fd is None:
            try:
                return self.proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return None
        select.select([self.fd], [], [], seconds)
        return self.proc.poll()


_MISSING_MODULE = re.compile(r"\bModuleNotFoundError: No module named '([^']+)'")
_HINT_TAIL = 20  # lines of the log searched, as many as a failure prints


def python_hint(log_file: Path, path_var: str) -> str:
    """For a cmd that died of ModuleNotFoundError: which `python` its PATH finds, and which one sluice runs on.

    A pipx install puts sluice in a private environment, so the `python` a cmd finds on PATH lacks
    what was installed beside sluice; the bare ImportError does not say that.
    """
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16 * 1024))
            tail = f.read().decode(errors="replace").splitlines()[-_HINT_TAIL:]
    except OSError:
        return ""
    missing = _MISSING_MODULE.findall("\n".join(tail))
    if not missing:
        return ""
    found = shutil.which("python", path=path_var)
    on_path = f"`python` on this stage's PATH is {found}" if found else "There is no `python` on this stage's PATH"
    if found and Path(found).parent == Path(sys.executable).parent:
        why = "Both are in one environment, and it lacks the module."
    else:
        why = "A cmd stage runs the interpreter its PATH finds, which may lack packages installed beside sluice (with pipx, for one)."
    return (
        f"hint: the command could not import {missing[-1]!r}. {on_path}; sluice itself runs on {sys.executable}.\n{why}\n"
        "Install the missing package into the environment that runs the command, or name the interpreter in the cmd:"
        " an absolute path, or ${params.python} with params: {python: /path/to/bin/python}"
        ' (docs/spec.md, "Which python a cmd runs").'
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _kill(proc: subprocess.Popen[bytes], stubborn: Callable[[], None]) -> None:
    """SIGTERM the stage's whole process group, then SIGKILL what is left after a grace period;
    `stubborn` says so first, or a stage that ignores SIGTERM looks like a hung Sluice."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        if sig is signal.SIGKILL:
            stubborn()
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_leftovers(layout: Layout, run_id: str, reporter: Reporter) -> None:
    """Stop what a dead run's stages left running, before this run plans or starts anything.

    The dead run's watchdog normally did it; if that died too (an OOM kill, a container stop),
    a second copy of a stage must not run beside the first, appending to the same files.
    """
    for left in leftovers(layout.running, run_id):
        if left.pids is None:  # no /proc: only the group id, which may have been reused, so do not kill
            if left.pgid is not None and group_alive(left.pgid):
                raise SluiceError(
                    f"stage {left.stage} of run {left.run_id}, which did not finish, may still be running as process"
                    f" group {left.pgid}; stop it (or check that group is unrelated), then delete {layout.running / left.run_id}.jsonl"
                )
            continue
        if left.pids:
            when = time.strftime("%H:%M:%S", time.localtime(left.started)) if left.started else "?"
            pids = ", ".join(map(str, left.pids))
            reporter.stage_note(
                left.stage,
                f"sluice: stage {left.stage} of run {left.run_id} (started {when}, the run died) "
                f"was still running (pid {pids}); stopping it first",
            )
            terminate(left.pids, grace=KILL_GRACE)
    forget_leftovers(layout.running, run_id)


def install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM set `stop`; returns a function that puts the old handlers back."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in old:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore
