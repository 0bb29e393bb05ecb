"""The one exception tree for user-facing errors; each carries its location.

SluiceError                 exit 1 unless a subclass says otherwise
├── SpecError               exit 2: one or more Problems in pipeline files or arguments
├── StageFailed             raised by a stage plugin: a clean, expected failure (gate failed, bad data)
├── WorkspaceBusy           exit 3: another `sluice run` holds the workspace lock
├── Interrupted             exit 130: Ctrl-C or SIGTERM
└── ToolMissing             a system tool (Graphviz, Docker) is not available
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

KeyPath = tuple[str | int, ...]


def format_key_path(path: KeyPath) -> str:
    """`("stages", "train", "with", "params", 0)` → `stages.train.with.params[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest known name to `word`, if one is close enough to be a likely typo."""
    names = [str(c) for c in candidates]
    by_lower = {n.lower(): n for n in names}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


@dataclass(frozen=True)
class Location:
    file: str
    line: int = 0  # 1-based; 0 when unknown
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, where it is, and a hint when we have one."""

    location: Location
    message: str
    path: KeyPath = ()
    hint: str | None = None

    def __str__(self) -> str:
        where = f" {format_key_path(self.path)}:" if self.path else ""
        tail = f" (did you mean '{self.hint}'?)" if self.hint else ""
        return f"{self.location}:{where} {self.message}{tail}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "col": self.location.col,
            "path": format_key_path(self.path),
            "message": self.message,
            "hint": self.hint,
        }


class SluiceError(Exception):
    """Root of every error Sluice reports to a user without a traceback."""

    exit_code = 1


class SpecError(SluiceError):
    """The spec (or an argument that feeds it) is wrong; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(sorted(problems, key=_problem_order))
        super().__init__("\n".join(str(p) for p in self.problems))


def _problem_order(p: Problem) -> tuple[str, int, int, str]:
    return (p.location.file, p.location.line, p.location.col, p.message)


class StageFailed(SluiceError):
    """Raised by a stage plugin for an expected failure; `details` is shown as-is (a table, say)."""

    def __init__(self, message: str, details: str = ""):
        self.details = details
        super().__init__(message)


class WorkspaceBusy(SluiceError):
    exit_code = 3


class Interrupted(SluiceError):
    exit_code = 130


class ToolMissing(SluiceError):
    """A system tool is needed and not installed; the message says how to install it."""


@dataclass(frozen=True)
class ConfigProblem:
    """A problem a plugin finds in its own `with:` block; `path` is relative to `with:`."""

    message: str
    path: KeyPath = ()
    hint: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
