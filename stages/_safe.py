"""Config values that built-in stages write into generated files: checked strictly, quoted where written.

The schemas hold the patterns (image references, label keys, requirement specifiers). They are
not enough alone: jsonschema matches `pattern` with `re.search`, where `$` also matches before a
trailing newline, so `"python:3.11\\n"` passes `^…$`. Hence the control-character walk in
`check()`, and the writers re-check every value before it reaches a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sluice.engine.plugin import ConfigProblem, KeyPath, StageFailed

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def control_characters(value: Any, path: KeyPath = ()) -> Iterator[ConfigProblem]:
    """Every string (mapping keys too) in `value` holding a newline, tab or other control character."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            yield ConfigProblem(f"{_short(value)} contains a control character (newline, tab, …): not allowed here", path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _CONTROL.search(key):
                yield ConfigProblem(f"the key {_short(key)} contains a control character (newline, tab, …)", (*path, key))
                continue
            yield from control_characters(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from control_characters(item, (*path, i))


def requirement_problems(lines: Iterable[Any], path: KeyPath) -> Iterator[ConfigProblem]:
    """Entries that are not a plain PEP 508 specifier: pip options, URLs, paths, or unparsable text."""
    from packaging.requirements import InvalidRequirement, Requirement

    for i, line in enumerate(lines):
        if not isinstance(line, str) or _CONTROL.search(line):
            continue  # the schema or the control-character walk reports it
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            yield ConfigProblem(f"{_short(line)} is not a PEP 508 requirement (name, extras, version, markers): {reason}", (*path, i))
            continue
        if requirement.url:
            yield ConfigProblem(f"{_short(line)} names a URL; only index packages are allowed (name, extras, version, markers)", (*path, i))


def require_requirement(line: str, what: str) -> str:
    """`line` if it is a plain PEP 508 specifier; a StageFailed naming `what` otherwise."""
    problem = next(requirement_problems([line], ()), None)
    if problem is not None or _CONTROL.search(line):
        raise StageFailed(f"{what}: refusing to write requirement {_short(line)} into requirements.txt")
    return line


def require_match(pattern: str, value: str, what: str) -> str:
    """`value` if it matches `pattern` as a whole (no trailing newline); a StageFailed otherwise."""
    if not re.fullmatch(pattern, value):
        raise StageFailed(f"{what} {_short(value)} is not valid; refusing to write it into a generated file")
    return value


def dockerfile_string(value: str) -> str:
    """`value` as a double-quoted Dockerfile word: JSON-escaped, and `$` escaped so nothing expands."""
    return json.dumps(value, ensure_ascii=False).replace("$", "\\$")


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
