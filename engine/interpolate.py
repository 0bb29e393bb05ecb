"""The `${…}` reference syntax: finding references, looking their values up, embedding them in text.

`engine.shell` splices values into a `cmd` (quoted for the shell); `engine.resolve` applies both
to a whole spec.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice.engine.errors import did_you_mean
from sluice.engine.load import over_limit

# `$${` (literal), `${expr}`, or a `${` left unclosed
REF = re.compile(r"\$\$\{|\$\{\s*([^{}]*?)\s*\}|\$\{")
UNCLOSED = "'${' is not closed; write $${ for a literal ${ passed to the shell"
NUL = "a value holds a NUL byte, which no command, path or environment value can hold"


class Undefined(Exception):
    """A reference that cannot be resolved; the caller adds the location."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message)


def render_scalar(value: Any) -> str:
    """How a value looks when embedded in a longer string (YAML/JSON spelling for scalars)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(render_scalar(v) for v in value)
    return str(value)


def interpolate(text: str, lookup: Callable[[str], Any], keep: Sequence[str] = (), limit: int | None = None) -> Any:
    """Replace each `${expr}` by `lookup(expr)`; a string that is exactly one `${…}` keeps its type.

    With `limit`, a result longer than that many bytes is an error, raised before it is built.
    """
    if "$" not in text:
        return text
    whole = REF.fullmatch(text)
    if whole and whole.group(1) is not None and not whole.group(1).startswith(tuple(keep)):
        return lookup(whole.group(1))
    size = [len(text.encode())]

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr is None:
            if m.group(0) == "${":
                raise Undefined(UNCLOSED)
            return "$${" if keep else "${"  # `$${` stays escaped until the last pass
        if expr.startswith(tuple(keep)):
            return m.group(0)
        value = lookup(expr)
        if isinstance(value, dict):
            raise Undefined(f"'${{{expr}}}' is a mapping and cannot be embedded in a string")
        piece = render_scalar(value)
        size[0] += len(piece.encode())
        if limit is not None and size[0] > limit:
            raise Undefined(too_long(limit))
        return piece

    return REF.sub(sub, text)


def too_long(limit: int) -> str:
    return f"the string is {over_limit('string_bytes', limit, size=True)} after ${{…}} interpolation"


def lookup_dotted(root: Mapping[str, Any], dotted: str, what: str) -> Any:
    node: Any = root
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict) or part not in node:
            so_far = ".".join(parts[:i])
            options = list(node) if isinstance(node, dict) else []
            where = f"{what}.{so_far}" if so_far else what
            raise Undefined(f"'{what}.{dotted}' is not defined ({where} has no '{part}')", did_you_mean(part, options))
        node = node[part]
    return node
