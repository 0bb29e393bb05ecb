"""Reporters: what a run, a plan and a spec check look like to people (rich) and machines (JSON)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

from sluice.engine.errors import Problem, SluiceError, format_key_path
from sluice.engine.model import Decision, Outcome, PlanItem, RemoteTally, RunSummary, StageResult
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
    console = Console(file=cast(TextIO, PipeSafe(stream or sys.stdout)), highlight=False, soft_wrap=True)
    if not console.is_terminal:  # a log or pipe cannot be resized: measured once, not at every line (~0.5 ms each)
        console.size = console.size
    return console


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


_PLAIN = re.compile(r"[ -9;-Z\\\]^_a-~]*")  # printable ASCII but `:` and `[`: rich would print it unchanged


@dataclass
class ConsoleReporter:
    """Prints a line as each stage starts and ends; skipped stages only with `verbose`."""

    workspace: Path
    verbose: bool = False
    console: Any = None  # a rich Console, made when a line needs one

    def _print(self, text: str) -> None:
        """`text` in rich markup. A line without markup or emoji codes (a no-op run's summary) is
        written as it is, so a run that prints nothing else never imports rich."""
        if self.console is None and _PLAIN.fullmatch(text):
            self._print_text(text)
            return
        console = self._rich()
        if console.color_system is None:  # a log or a pipe: no styles to emit, so only the markup is read (~5x cheaper)
            console.file.write(console.render_str(text).plain + "\n")
            console.file.flush()
            return
        console.print(text)

    def _print_text(self, text: str) -> None:
        """`text` as it is: no markup, no emoji codes (and no rich, when nothing else needed it)."""
        if self.console is None:
            out = PipeSafe(sys.stdout)
            out.write(text + "\n")
            out.flush()
        else:
            self.console.print(text, markup=False, emoji=False)

    def _rich(self) -> Any:
        if self.console is None:
            self.console = _console()
        return self.console

    def stage_started(self, item: PlanItem) -> None:
        verb = "restoring" if item.decision is Decision.RESTORE else "running"
        why = f" [dim]({'; '.join(item.reasons)})[/]" if item.reasons else ""
        self._print(f"[bold]▶[/] {_esc(item.stage)} {verb}{why}")

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
        self._print(f"[{style}]{mark}[/] {_esc(result.stage)} {_esc(text)}")

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
            self._rich().rule(f"[bold red]{_esc(r.stage)} failed")
            self._print(_esc(r.error))
            if r.details:
                self._print(_esc(r.details))
            for path in r.kept:
                self._print(f"  report kept: {_esc(path)}")
            tail = log_tail(self.workspace, r.log_path)
            if tail:
                self._print(f"[dim]last lines of {r.log_path}:[/]")
                self._print(_esc(tail))
        self._print(f"{head}{', '.join(parts)} in {summary.seconds:.2f}s")
        if summary.remote is not None:
            self._print_text(remote_line(summary.remote))

    def stage_note(self, stage: str, message: str) -> None:
        self._print(f"[yellow]{_esc(message)}[/]")


@dataclass
class QuietReporter:
    """Collects nothing and prints nothing: `--json` prints the summary at the end instead."""

    def stage_started(self, item: PlanItem) -> None:
        pass

    def stage_finished(self, result: StageResult) -> None:
        pass

    def stage_note(self, stage: str, message: str) -> None:
        sys.stderr.write(message + "\n")  # stdout carries only the JSON


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def plural(count: int, one: str, many: str = "") -> str:
    """`1 object`, `2 objects`, `0 run entries` (with `many`)."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def remote_line(t: RemoteTally) -> str:
    """`remote team: fetched 3 objects (3.0 MB), pushed 0 objects (0 bytes) in 0 entries; 9 requests (6 GET, 3 HEAD)`"""
    if not t.requests and not t.down:
        return f"remote {t.name}: not asked (nothing was missing locally)"
    verbs = ", ".join(f"{n} {verb}" for verb, n in sorted(t.requests.items(), key=lambda kv: (-kv[1], kv[0])))
    line = (
        f"remote {t.name}: fetched {plural(t.fetched_objects, 'object')} ({_size(t.fetched_bytes)}),"
        f" pushed {plural(t.pushed_objects, 'object')} ({_size(t.pushed_bytes)}) in {plural(t.pushed_entries, 'entry', 'entries')};"
        f" {plural(sum(t.requests.values()), 'request')}" + (f" ({verbs})" if verbs else "")
    )
    return line + (f"; given up: {t.down}" if t.down else "")


def summary_json(summary: RunSummary, workspace: Path) -> str:
    return json.dumps(
        {
            "run_id": summary.run_id,
            "ok": not summary.failed and not summary.interrupted,
            "interrupted": summary.interrupted,
            "seconds": round(summary.seconds, 3),
            **({"remote": summary.remote.as_dict()} if summary.remote is not None else {}),
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


def summary_markdown(summary: RunSummary) -> str:
    """The run as a Markdown table: one row per stage, what happened and why."""
    counts = Counter(r.outcome for r in summary.results)
    head = ", ".join(f"{counts[o]} {o.value}" for o in Outcome if counts[o])
    state = "interrupted" if summary.interrupted else "failed" if summary.failed else "passed"
    lines = [
        f"### sluice run {state}: {head or 'no stages'} in {summary.seconds:.2f}s",
        "",
        *([_cell(remote_line(summary.remote)), ""] if summary.remote is not None else []),
        "| stage | outcome | seconds | why |",
        "|---|---|---:|---|",
    ]
    for r in summary.results:
        why = r.error if r.outcome is Outcome.FAILED else "; ".join(r.reasons)
        lines.append(f"| {_cell(r.stage)} | {_MARK[r.outcome][0]} {r.outcome.value} | {r.seconds:.2f} | {_cell(why)} |")
    return "\n".join(lines) + "\n\n"


def _cell(text: str) -> str:
    # A pipe ends the cell and a newline the row: both would break the table.
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def append_markdown_summary(path: Path, summary: RunSummary) -> None:
    """Append to a job-summary file (GitHub's $GITHUB_STEP_SUMMARY collects what each step appends)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(summary_markdown(summary))
    except OSError as exc:
        raise SluiceError(f"cannot write the summary to {path}: {exc.strerror or exc}") from None


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
