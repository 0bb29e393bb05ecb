"""Reporters: what a run, a plan and a spec check look like to people (rich) and machines (JSON)."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from sluice.engine.errors import Problem, format_key_path
from sluice.engine.model import Decision, Outcome, PlanItem, RunSummary, StageResult
from sluice.engine.state import result_record

LOG_TAIL_LINES = 20
_MARK = {
    Outcome.RAN: ("✓", "green"),
    Outcome.RESTORED: ("↺", "cyan"),
    Outcome.SKIPPED: ("·", "dim"),
    Outcome.FAILED: ("✗", "bold red"),
    Outcome.NOT_RUN: ("-", "yellow"),
}


def _console(stream: TextIO | None = None) -> Any:
    from rich.console import Console

    # PipeSafe is a TextIO by delegation (__getattr__), which a type checker cannot see.
    return Console(file=cast(TextIO, PipeSafe(stream or sys.stdout)), highlight=False, soft_wrap=True)


class PipeSafe:
    """A stream that outlives its reader: when `sluice run | cat` loses `cat` (Ctrl-C reaches the
    whole pipeline), the run must still stop cleanly, record itself and exit 130, not die of EPIPE."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._detach()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._detach()

    def _detach(self) -> None:
        # Point the descriptor at /dev/null: later writes, and the interpreter's flush at exit
        # (which would otherwise turn the exit code into 120), go nowhere quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def log_tail(workspace: Path, log_path: str, lines: int = LOG_TAIL_LINES) -> str:
    if not log_path:
        return ""
    try:
        with open(workspace / log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def print_notes(notes: Sequence[Problem], stream: TextIO) -> None:
    """`file:line:col: key.path: note: message`: worth knowing, not wrong."""
    for n in notes:
        stream.write(f"{n.location}: {format_key_path(n.path)}: note: {n.message}\n")


def print_problems(problems: Sequence[Problem], stream: TextIO) -> None:
    """`file:line:col: key.path: message` lines, the form editors and CI annotators parse."""
    for p in problems:
        stream.write(f"{p}\n")


@dataclass
class ConsoleReporter:
    """Prints a line as each stage starts and ends; skipped stages only with `verbose`."""

    workspace: Path
    verbose: bool = False
    console: Any = field(default_factory=_console)

    def stage_started(self, item: PlanItem) -> None:
        verb = "restoring" if item.decision is Decision.RESTORE else "running"
        why = f" [dim]({'; '.join(item.reasons)})[/]" if item.reasons else ""
        self.console.print(f"[bold]▶[/] {_esc(item.stage)} {verb}{why}")

    def stage_finished(self, result: StageResult) -> None:
        if result.outcome is Outcome.SKIPPED and not self.verbose:
            return
        mark, style = _MARK[result.outcome]
        text = {
            Outcome.RAN: f"ran in {result.seconds:.2f}s" + (f" after {result.attempts} attempts" if result.attempts > 1 else ""),
            Outcome.RESTORED: f"restored from cache in {result.seconds:.2f}s",
            Outcome.SKIPPED: "skipped: " + "; ".join(result.reasons),
            Outcome.FAILED: f"failed: {result.error}",
            Outcome.NOT_RUN: "not run: " + "; ".join(result.reasons),
        }[result.outcome]
        self.console.print(f"[{style}]{mark}[/] {_esc(result.stage)} {_esc(text)}")

    def summary(self, summary: RunSummary) -> None:
        counts = Counter(r.outcome for r in summary.results)
        parts = [
            f"{counts[Outcome.RAN]} ran",
            f"{counts[Outcome.RESTORED]} restored",
            f"{counts[Outcome.SKIPPED]} up to date",
        ]
        if counts[Outcome.FAILED]:
            parts.append(f"[bold red]{counts[Outcome.FAILED]} failed[/]")
        if counts[Outcome.NOT_RUN]:
            parts.append(f"{counts[Outcome.NOT_RUN]} not run")
        head = "[yellow]interrupted[/]: " if summary.interrupted else ""
        for r in summary.failed:
            self.console.rule(f"[bold red]{_esc(r.stage)} failed")
            self.console.print(_esc(r.error))
            if r.details:
                self.console.print(_esc(r.details))
            for path in r.kept:
                self.console.print(f"  report kept: {_esc(path)}")
            tail = log_tail(self.workspace, r.log_path)
            if tail:
                self.console.print(f"[dim]last lines of {r.log_path}:[/]")
                self.console.print(_esc(tail))
        self.console.print(f"{head}{', '.join(parts)} in {summary.seconds:.2f}s")

    def stage_note(self, stage: str, message: str) -> None:
        self.console.print(f"[yellow]{_esc(message)}[/]")


@dataclass
class QuietReporter:
    """Collects nothing and prints nothing: `--json` prints the summary at the end instead."""

    def stage_started(self, item: PlanItem) -> None:
        pass

    def stage_finished(self, result: StageResult) -> None:
        pass

    def stage_note(self, stage: str, message: str) -> None:
        sys.stderr.write(message + "\n")  # stdout carries only the JSON


def summary_json(summary: RunSummary, workspace: Path) -> str:
    return json.dumps(
        {
            "run_id": summary.run_id,
            "ok": not summary.failed and not summary.interrupted,
            "interrupted": summary.interrupted,
            "seconds": round(summary.seconds, 3),
            "stages": {
                r.stage: {
                    **result_record(r),
                    **({"log_tail": log_tail(workspace, r.log_path)} if r.outcome is Outcome.FAILED else {}),
                }
                for r in summary.results
            },
        },
        indent=2,
    )


def print_status(items: Sequence[PlanItem], as_json: bool, stream: TextIO) -> None:
    if as_json:
        data = {
            i.stage: {"decision": i.decision.value, "stale": i.decision is not Decision.SKIP, "reasons": list(i.reasons)} for i in items
        }
        stream.write(json.dumps({"stages": data}, indent=2) + "\n")
        return
    console = _console(stream)
    stale = [i for i in items if i.decision is not Decision.SKIP]
    if not stale:
        console.print(f"[green]Everything is up to date[/] ({len(items)} stages).")
        return
    for i in stale:
        verb = "will restore" if i.decision is Decision.RESTORE else "will run"
        console.print(f"[bold]{_esc(i.stage)}[/]: {verb}: {_esc('; '.join(i.reasons))}")
    console.print(f"{len(stale)} of {len(items)} stages are stale.")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
