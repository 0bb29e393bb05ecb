"""Splicing values into a `cmd`: each is quoted for where its `${…}` sits, so it reaches the
command as one exact string and never as shell code.

A small lexer follows bash's quoting: unquoted text, '…', "…", $'…', backslash escapes, $(…)
and `…` (which open a fresh unquoted context), comments and here-documents. `${raw:…}` is the
one way to splice a value as shell text; `sluice validate` notes every use.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice.engine.errors import KeyPath, Problem
from sluice.engine.interpolate import NUL, REF, UNCLOSED, Undefined, render_scalar, too_long
from sluice.engine.load import Document

_U, _D, _S, _A, _H, _L = "u", '"', "'", "$'", "h", "l"  # contexts: unquoted, "…", '…', $'…', heredoc, literal heredoc
_UNQUOTED_FRAMES = ("", "(", "((", "`")
_WORD_START = " \t\n;&|()<>"
# Runs of characters that cannot change the lexer's state, per context: skipped in one step.
_PLAIN = {
    _U: re.compile(r"[^$\\'\"`#()<\n]+"),
    _D: re.compile(r'[^$\\"`]+'),
    _S: re.compile(r"[^$']+"),
    _A: re.compile(r"[^$'\\]+"),
}
_DQ_SPECIAL = {ord(c): "\\" + c for c in '\\"$`'}
_HEREDOC_SPECIAL = {ord(c): "\\" + c for c in "\\$`"}
RAW = "raw:"
# `${outputs.N}` is filled in at execution (staging or final path): resolution leaves a marker
# holding the context. NUL cannot occur in a command (checked), so no value can forge one.
_MARK = "\0"


def quote_for(value: Any, ctx: str) -> str:
    """`value` as shell text that yields exactly it when placed in context `ctx`."""
    if ctx == _U:
        return " ".join(shlex.quote(render_scalar(v)) for v in (value if isinstance(value, list) else [value]))
    text = render_scalar(value)
    if ctx == _D:
        return text.translate(_DQ_SPECIAL)
    if ctx in (_S, _A):
        return "'" + shlex.quote(text) + ctx  # close, the quoted value, reopen
    return text.translate(_HEREDOC_SPECIAL) if ctx == _H else text


def splice_cmd(cmd: str, lookup: Callable[[str], Any], keep: Sequence[str] = (), limit: int | None = None) -> str:
    """`cmd` with each `${expr}` replaced by `lookup(expr)`, quoted for its place; `$${` → `${`.

    References starting with a `keep` prefix become markers for `render_cmd`; `${raw:expr}`
    splices the value as shell text, unquoted.
    """
    return _CmdLexer(cmd, lookup, tuple(keep), limit).run()


def render_cmd(cmd: str, outputs: Mapping[str, str]) -> str:
    """The last pass over a resolved `cmd`: each `${outputs.N}` → `outputs[N]` (final or staging path)."""
    if _MARK not in cmd:
        return cmd
    parts = cmd.split(_MARK)
    for i in range(1, len(parts), 2):
        ctx, _, expr = parts[i].partition(" ")
        parts[i] = quote_for(outputs[expr.partition(".")[2]], ctx)
    return "".join(parts)


def raw_uses(cmd: str) -> list[str]:
    """The `${raw:…}` references in a command as written."""
    found: list[str] = []

    def note(expr: str) -> str:
        if expr.startswith(RAW):
            found.append(expr)
        return ""

    with contextlib.suppress(Undefined):  # reported by resolution
        _CmdLexer(cmd, note, ()).run()
    return found


def raw_notes(doc: Document) -> list[Problem]:
    """A note for each `${raw:…}` in a `cmd`: where a value reaches the shell unquoted."""
    stages = doc.data.get("stages") if isinstance(doc.data, dict) else None
    notes: list[Problem] = []
    for name, stage in stages.items() if isinstance(stages, dict) else ():
        cmd = stage.get("cmd") if isinstance(stage, dict) else None
        if isinstance(cmd, str) and RAW in cmd:
            at: KeyPath = ("stages", name, "cmd")
            notes += [Problem(doc.location(at), f"${{{e}}} is spliced into the shell command unquoted", at) for e in raw_uses(cmd)]
    return notes


class _CmdLexer:
    def __init__(self, cmd: str, lookup: Callable[[str], Any], keep: tuple[str, ...], limit: int | None = None):
        self.cmd, self.lookup, self.keep, self.limit = cmd, lookup, keep, limit
        self.size = len(cmd.encode()) if limit is not None else 0
        self.out: list[str] = []
        self.frames: list[str] = [""]
        self.heredocs: list[tuple[str, bool, bool]] = []  # pending: (delimiter, strip tabs, literal)

    def run(self) -> str:
        cmd, i, n = self.cmd, 0, len(self.cmd)
        while i < n:
            top = self.frames[-1]
            plain = _PLAIN.get(top, _PLAIN[_U]).match(cmd, i)
            if plain:
                self.out.append(plain.group())
                i = plain.end()
                continue
            c = cmd[i]
            if c == "$" and top not in (_S, _A):
                m = REF.match(cmd, i)
                if m:
                    self.reference(m, _D if top == _D else _U)
                    i = m.end()
                    continue
            if top in (_S, _A):
                i = self.quoted_single(i, top)
                continue
            if c == "\\":
                self.out.append(cmd[i : i + 2])
                i += 2
                continue
            if top == _D:
                if c == '"':
                    self.frames.pop()
                elif c == "`" or cmd.startswith("$(", i):
                    i = self.open_subst(i)
                    continue
                self.out.append(c)
                i += 1
                continue
            i = self.unquoted(i, top)
        return "".join(self.out)

    def unquoted(self, i: int, top: str) -> int:
        cmd, c = self.cmd, self.cmd[i]
        if c == "#" and (i == 0 or cmd[i - 1] in _WORD_START):
            end = cmd.find("\n", i)
            end = len(cmd) if end < 0 else end
            self.comment(cmd[i:end])
            return end
        if c == "'" or c == '"':
            self.frames.append(c)
        elif cmd.startswith("$'", i):
            self.frames.append(_A)
            self.out.append("$'")
            return i + 2
        elif c == "`" or cmd.startswith("$(", i):
            return self.open_subst(i)
        elif cmd.startswith("((", i):
            self.frames.append("((")
            self.out.append("((")
            return i + 2
        elif c == "(":
            self.frames.append("(")
        elif cmd.startswith("))", i) and top == "((":
            self.frames.pop()
            self.out.append("))")
            return i + 2
        elif c == ")" and top == "(":
            self.frames.pop()
        elif cmd.startswith("<<", i) and not cmd.startswith("<<<", i) and top != "((":
            return self.heredoc_operator(i)
        elif c == "\n" and self.heredocs:
            self.out.append(c)
            return self.heredoc_bodies(i + 1)
        self.out.append(c)
        return i + 1

    def open_subst(self, i: int) -> int:
        if self.cmd[i] == "`":
            if self.frames[-1] == "`":
                self.frames.pop()
            else:
                self.frames.append("`")
            self.out.append("`")
            return i + 1
        double = self.cmd.startswith("$((", i)
        self.frames.append("((" if double else "(")
        self.out.append("$((" if double else "$(")
        return i + (3 if double else 2)

    def quoted_single(self, i: int, top: str) -> int:
        c = self.cmd[i]
        if top == _A and c == "\\":
            self.out.append(self.cmd[i : i + 2])
            return i + 2
        if c == "'":
            self.frames.pop()
        elif c == "$":
            m = REF.match(self.cmd, i)
            if m:
                self.reference(m, top)
                return m.end()
        self.out.append(c)
        return i + 1

    def reference(self, m: re.Match[str], ctx: str) -> None:
        text, expr = m.group(0), m.group(1)
        if expr is None:
            if text == "${":
                raise Undefined(UNCLOSED)
            self.out.append("${")  # `$${`: a literal `${` for the shell
            return
        if expr.startswith(self.keep):
            self.lookup(expr)  # checked now, filled in by render_cmd
            self.out.append(f"{_MARK}{ctx} {expr}{_MARK}")
            return
        raw = expr.startswith(RAW)
        value = self.lookup(expr)
        if isinstance(value, dict):
            raise Undefined(f"'${{{expr}}}' is a mapping and cannot be embedded in a string")
        if ctx in (_H, _L) and "\n" in render_scalar(value):
            raise Undefined(f"the value of ${{{expr}}} has a line break and cannot be spliced into a here-document")
        piece = render_scalar(value) if raw else quote_for(value, ctx)
        if "\0" in piece:
            raise Undefined(NUL)
        if self.limit is not None:
            self.size += len(piece.encode())
            if self.size > self.limit:
                raise Undefined(too_long(self.limit))
        self.out.append(piece)

    def comment(self, text: str) -> None:
        """A comment runs nothing, but a line break in a value would end it: keep the reference as written."""
        for m in REF.finditer(text):
            if m.group(1) is not None and not m.group(1).startswith(self.keep):
                self.lookup(m.group(1))  # still checked, and still a dependency
        self.out.append(text)

    def heredoc_operator(self, i: int) -> int:
        cmd, j = self.cmd, i + 2
        strip = cmd.startswith("-", j)
        j += strip
        while j < len(cmd) and cmd[j] in " \t":
            j += 1
        start, quote = j, ""
        while j < len(cmd) and (quote or cmd[j] not in _WORD_START):
            if quote and cmd[j] == quote:
                quote = ""
            elif not quote and cmd[j] in "'\"":
                quote = cmd[j]
            j += 1
        word = cmd[start:j]
        delim = word.translate({ord(q): None for q in "'\"\\"})
        self.heredocs.append((delim, strip, delim != word))
        self.out.append(cmd[i:j])
        return j

    def heredoc_bodies(self, i: int) -> int:
        cmd = self.cmd
        for delim, strip, literal in self.heredocs:
            while i < len(cmd):
                end = cmd.find("\n", i)
                end = len(cmd) if end < 0 else end
                line = cmd[i:end]
                if (line.lstrip("\t") if strip else line) == delim:
                    self.out.append(line)
                else:
                    mark = len(self.out)
                    pos = 0
                    for m in REF.finditer(line):
                        self.out.append(line[pos : m.start()])
                        self.reference(m, _L if literal else _H)
                        pos = m.end()
                    self.out.append(line[pos:])
                    made = "".join(self.out[mark:])
                    if (made.lstrip("\t") if strip else made) == delim:
                        raise Undefined(f"a spliced value makes a line equal to the here-document's end '{delim}'")
                self.out.append(cmd[end : end + 1])
                i = end + 1
                if (line.lstrip("\t") if strip else line) == delim:
                    break
        self.heredocs = []
        return i
