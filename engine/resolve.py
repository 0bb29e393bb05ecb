"""Validated document + overrides → a frozen Spec: params applied, matrices expanded, `${…}` resolved.

Interpolation happens in two passes. The first resolves `${params.…}` and `${matrix.…}` in
every string field; the second resolves `${stages.X.outputs.Y}` in inputs and
`${inputs.N}` / `${outputs.N}` elsewhere. `${outputs.N}` in `cmd` is left for execution,
which points it at the stage's staging area. `$${` is a literal `${`.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import KeyPath, Location, Problem, SpecError, did_you_mean
from engine.limits import DEFAULT, Limits
from engine.load import Document, load_file, load_text, over_limit
from engine.model import Spec, StageSpec

# `$${` (literal), `${expr}`, or a `${` left unclosed
_REF = re.compile(r"\$\$\{|\$\{\s*([^{}]*?)\s*\}|\$\{")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KEEP_FOR_LATER = ("inputs.", "outputs.", "stages.")
_NUL = "a value holds a NUL byte, which no command, path or environment value can hold"
_NAMESPACES = ("params", "matrix", "inputs", "outputs", "stages")
_UNCLOSED = "'${' is not closed; write $${ for a literal ${ passed to the shell"


class _Skipped(Exception):
    """A reference to a stage left out of resolution."""


class _Undefined(Exception):
    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message)


def parse_duration(value: float | int | str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))


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
    whole = _REF.fullmatch(text)
    if whole and whole.group(1) is not None and not whole.group(1).startswith(tuple(keep)):
        return lookup(whole.group(1))
    size = [len(text.encode())]

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr is None:
            if m.group(0) == "${":
                raise _Undefined(_UNCLOSED)
            return "$${" if keep else "${"  # `$${` stays escaped until the last pass
        if expr.startswith(tuple(keep)):
            return m.group(0)
        value = lookup(expr)
        if isinstance(value, dict):
            raise _Undefined(f"'${{{expr}}}' is a mapping and cannot be embedded in a string")
        piece = render_scalar(value)
        size[0] += len(piece.encode())
        if limit is not None and size[0] > limit:
            raise _Undefined(too_long(limit))
        return piece

    return _REF.sub(sub, text)


def too_long(limit: int) -> str:
    return f"the string is {over_limit('string_bytes', limit, size=True)} after ${{…}} interpolation"


def _walk(value: Any, fn: Callable[[str, KeyPath], Any], path: KeyPath) -> Any:
    if isinstance(value, str):
        return fn(value, path)
    if isinstance(value, dict):
        return {k: _walk(v, fn, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn, path + (i,)) for i, v in enumerate(value)]
    return value


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
            raise _Undefined(f"'{what}.{dotted}' is not defined ({where} has no '{part}')", did_you_mean(part, options))
        node = node[part]
    return node


# ---------------------------------------------------------------- shell quoting in cmd
#
# A value spliced into `cmd` is quoted for where its `${…}` sits, so it reaches the command as
# one exact string and never as shell code. A small lexer follows bash's quoting: unquoted
# text, '…', "…", $'…', backslash escapes, $(…) and `…` (which open a fresh unquoted context),
# comments and here-documents.

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
    if ctx == _S or ctx == _A:
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

    try:
        _CmdLexer(cmd, note, ()).run()
    except _Undefined:
        pass  # reported by resolution
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
                m = _REF.match(cmd, i)
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
            m = _REF.match(self.cmd, i)
            if m:
                self.reference(m, top)
                return m.end()
        self.out.append(c)
        return i + 1

    def reference(self, m: re.Match[str], ctx: str) -> None:
        text, expr = m.group(0), m.group(1)
        if expr is None:
            if text == "${":
                raise _Undefined(_UNCLOSED)
            self.out.append("${")  # `$${`: a literal `${` for the shell
            return
        if expr.startswith(self.keep):
            self.lookup(expr)  # checked now, filled in by render_cmd
            self.out.append(f"{_MARK}{ctx} {expr}{_MARK}")
            return
        raw = expr.startswith(RAW)
        value = self.lookup(expr)
        if isinstance(value, dict):
            raise _Undefined(f"'${{{expr}}}' is a mapping and cannot be embedded in a string")
        if ctx in (_H, _L) and "\n" in render_scalar(value):
            raise _Undefined(f"the value of ${{{expr}}} has a line break and cannot be spliced into a here-document")
        piece = render_scalar(value) if raw else quote_for(value, ctx)
        if "\0" in piece:
            raise _Undefined(_NUL)
        if self.limit is not None:
            self.size += len(piece.encode())
            if self.size > self.limit:
                raise _Undefined(too_long(self.limit))
        self.out.append(piece)

    def comment(self, text: str) -> None:
        """A comment runs nothing, but a line break in a value would end it: keep the reference as written."""
        for m in _REF.finditer(text):
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
                    for m in _REF.finditer(line):
                        self.out.append(line[pos : m.start()])
                        self.reference(m, _L if literal else _H)
                        pos = m.end()
                    self.out.append(line[pos:])
                    made = "".join(self.out[mark:])
                    if (made.lstrip("\t") if strip else made) == delim:
                        raise _Undefined(f"a spliced value makes a line equal to the here-document's end '{delim}'")
                self.out.append(cmd[end : end + 1])
                i = end + 1
                if (line.lstrip("\t") if strip else line) == delim:
                    break
        self.heredocs = []
        return i


# ---------------------------------------------------------------- params


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}.get(type(value), "null")


def apply_overrides(
    doc: Document, params: dict[str, Any], params_file: Path | None, sets: Sequence[str], limits: Limits = DEFAULT
) -> dict[str, Any]:
    params = copy.deepcopy(params)
    problems: list[Problem] = []
    if params_file is not None:
        extra = load_file(params_file, limits=limits)
        if not isinstance(extra.data, dict):
            raise SpecError([Problem(Location(str(params_file), 1, 1), "a params file must hold a mapping")])
        _deep_merge(params, extra.data)
    for item in sets:
        key, sep, raw = item.partition("=")
        where = Location(f"--set {item}")
        if not sep or not key:
            problems.append(Problem(where, "expected KEY=VALUE, e.g. --set train.cv=3"))
            continue
        try:
            # The guarded loader: a --set value often comes from CI inputs, so it is untrusted too.
            value = load_text(raw, where.file, limits).data if raw.strip() else raw
        except SpecError:
            value = raw  # not YAML: the text itself
        parts = key.split(".")
        node = params
        for i, part in enumerate(parts[:-1]):
            so_far = "params." + ".".join(parts[: i + 1])
            if part not in node:
                known = ", ".join(map(str, node)) or "none"
                problems.append(Problem(where, f"{so_far} is not defined in the pipeline (defined: {known})", hint=did_you_mean(part, node)))
                break
            if not isinstance(node[part], dict):
                problems.append(Problem(where, f"{so_far} is {_kind(node[part])}, not a mapping", hint=None))
                break
            node = node[part]
        else:
            if parts[-1] not in node:
                problems.append(Problem(where, f"params.{key} is not defined in the pipeline", hint=did_you_mean(parts[-1], node)))
            else:
                node[parts[-1]] = value
    if problems:
        raise SpecError(problems)
    return params


def _deep_merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


# ---------------------------------------------------------------- stages


def matrix_id(base: str, combo: Mapping[str, Any]) -> str:
    return f"{base}[{','.join(f'{k}={render_scalar(v)}' for k, v in combo.items())}]" if combo else base


class _Resolver:
    def __init__(self, doc: Document, params: dict[str, Any], skip: frozenset[str], limits: Limits):
        self.doc = doc
        self.params = params
        self.limits = limits
        self.skip = skip
        self.names = list(doc.data["stages"])  # for "did you mean", skipped stages included
        self.problems: list[Problem] = []
        self.bad_paths: set[KeyPath] = set()  # already reported: later passes stay quiet there
        self.instance_index: dict[str, tuple[tuple[str, ...], dict[tuple[Any, ...], str]]] = {}  # see _pick_instance

    def problem(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        self.bad_paths.add(path)
        self.problems.append(Problem(self.doc.location(path), message, path, hint))

    def axes(self, name: str, raw: Mapping[str, Any]) -> dict[str, list[Any]] | None:
        """A stage's matrix axes, `${params.…}` resolved; None (reported) if one is not a list."""
        axes: dict[str, list[Any]] = {}
        for key, values in (raw.get("matrix") or {}).items():
            path = ("stages", name, "matrix", key)
            if isinstance(values, str):
                values = self.first_pass(values, path, {}, {})
            if not isinstance(values, list) or not values:
                self.problem(path, f"matrix '{key}' must be a non-empty list")
                return None
            axes[key] = values
        return axes

    def expand(self, name: str, raw: Mapping[str, Any], axes: dict[str, list[Any]]) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        """One (fields, matrix values, params used) per matrix combination, first pass applied."""
        out = []
        for combo_values in itertools.product(*axes.values()) if axes else [()]:
            combo = dict(zip(axes, combo_values))
            used: dict[str, Any] = {}
            # `cmd` is resolved in one pass later, where each value is quoted for its place.
            fields = {k: v for k, v in raw.items() if k not in ("matrix", "cmd")}
            fields = _walk(fields, lambda s, p: self.first_pass(s, p, combo, used), ("stages", name))
            if "cmd" in raw:
                fields["cmd"] = raw["cmd"]
            out.append((fields, combo, used))
        return out

    def value(self, expr: str, combo: Mapping[str, Any], used: dict[str, Any]) -> Any:
        """The value of a `params.…` or `matrix.…` reference."""
        ns, _, rest = expr.partition(".")
        if ns == "params" and rest:
            value = lookup_dotted(self.params, rest, "params")
            used[rest] = value
            return value
        if ns == "matrix" and rest:
            if rest not in combo:
                raise _Undefined(f"'matrix.{rest}' is not defined for this stage", did_you_mean(rest, combo))
            return combo[rest]
        if expr.startswith(RAW):
            raise _Undefined("${raw:…} splices into a shell command and is only allowed in cmd")
        hint = did_you_mean(ns, _NAMESPACES)
        shell = "" if hint else f"; write $${{{expr}}} for a literal ${{…}} passed to the shell"
        raise _Undefined(f"unknown reference '${{{expr}}}'{shell}", hint)

    def first_pass(self, text: str, path: KeyPath, combo: Mapping[str, Any], used: dict[str, Any]) -> Any:
        try:
            return interpolate(text, lambda e: self.value(e, combo, used), _KEEP_FOR_LATER, self.limits.string_bytes)
        except _Undefined as exc:
            self.problem(path, str(exc), exc.hint)
            return text


def resolve(
    doc: Document, params: dict[str, Any], workspace: Path, file: Path,
    skip: frozenset[str] = frozenset(), limits: Limits = DEFAULT,
) -> Spec:
    """Expand matrices and interpolate every `${…}`; raises SpecError with all problems.

    Stages in `skip` (already reported as invalid) are left out; what refers to them is not checked.
    """
    r = _Resolver(doc, params, skip, limits)
    data = doc.data
    # Instances are counted before any is built: a 10^6-instance matrix is refused, not expanded.
    all_axes: dict[str, dict[str, list[Any]] | None] = {}  # None: reported, no instances
    total = 0
    for name, raw in data["stages"].items():
        if name in skip:
            continue
        axes = all_axes[name] = r.axes(name, raw)
        if axes is None:
            continue
        count = math.prod(len(v) for v in axes.values())
        if count > limits.matrix_instances:
            r.problem(("stages", name, "matrix"), f"the matrix expands to {count:,} instances, {over_limit('matrix_instances', limits.matrix_instances)}")
            all_axes[name] = None
            continue
        total += count
    if total > limits.stages:
        r.problem(("stages",), f"the pipeline expands to {total:,} stages, {over_limit('stages', limits.stages)}")
        raise SpecError(r.problems)
    expanded: dict[str, list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]] = {}
    for name, axes in all_axes.items():
        insts = r.expand(name, data["stages"][name], axes) if axes is not None else []
        expanded[name] = [(matrix_id(name, combo), f, combo, used) for f, combo, used in insts]

    ids = {sid: (name, combo) for name, insts in expanded.items() for sid, _, combo, _ in insts}
    outputs_by_id = {sid: f.get("outputs", {}) for insts in expanded.values() for sid, f, _, _ in insts}
    stages: list[StageSpec] = []
    for name, insts in expanded.items():
        for sid, fields, combo, used in insts:
            stages.append(_second_pass(r, data["stages"][name], name, sid, fields, combo, used, expanded, ids, outputs_by_id))
    if r.problems:
        raise SpecError(r.problems)
    return Spec(
        file=file,
        workspace=workspace,
        name=str(data.get("name") or workspace.name),
        params=params,
        stages=tuple(stages),
    )


def _second_pass(
    r: _Resolver,
    raw: Mapping[str, Any],
    name: str,
    sid: str,
    fields: dict[str, Any],
    combo: dict[str, Any],
    used: dict[str, Any],
    expanded: Mapping[str, list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]],
    ids: Mapping[str, tuple[str, dict[str, Any]]],
    outputs_by_id: Mapping[str, Mapping[str, str]],
) -> StageSpec:
    base: KeyPath = ("stages", name)
    refs: dict[str, str] = {}
    inputs: dict[str, str] = {}
    skipped: set[str] = set()

    def stage_ref(expr: str, input_name: str) -> str:
        m = re.fullmatch(r"stages\.([A-Za-z0-9_-]+(?:\[[^\]]*\])?)\.outputs\.([A-Za-z0-9_]+)", expr)
        if not m:
            raise _Undefined(f"'${{{expr}}}' is not a stage output; write ${{stages.NAME.outputs.OUTPUT}}")
        target, out = m.groups()
        if target.split("[", 1)[0] in r.skip:
            raise _Skipped
        target_id = _pick_instance(target, combo, expanded, ids, r.instance_index)
        if target_id == sid:
            raise _Undefined(f"stage '{name}' refers to its own output '{out}'")
        outs = outputs_by_id[target_id]
        if out not in outs:
            raise _Undefined(f"stage '{target_id}' has no output '{out}'", did_you_mean(out, outs))
        refs[input_name] = target_id
        return outs[out]

    for key, value in (fields.get("inputs") or {}).items():
        path = base + ("inputs", key)
        try:
            inputs[key] = interpolate(value, lambda e, k=key: stage_ref(e, k))
        except _Skipped:  # from a stage already reported as invalid: known, but not compiled
            inputs[key] = str(value)
            skipped.add(key)
        except _Undefined as exc:
            r.problem(path, str(exc), exc.hint)
            inputs[key] = str(value)
    outputs = {k: str(v) for k, v in (fields.get("outputs") or {}).items()}

    def io_lookup(expr: str) -> Any:
        ns, _, rest = expr.partition(".")
        table = inputs if ns == "inputs" else outputs if ns == "outputs" else None
        if table is None:
            raise _Undefined(f"'${{{expr}}}' can only be used in inputs; refer to it through an input")
        if rest not in table:
            raise _Undefined(f"stage '{name}' has no {ns[:-1]} '{rest}'", did_you_mean(rest, table))
        return table[rest]

    def io_pass(value: Any, path: KeyPath) -> Any:
        def fn(text: str, p: KeyPath) -> Any:
            if p in r.bad_paths:
                return text
            try:
                return interpolate(text, io_lookup, limit=r.limits.string_bytes)
            except _Undefined as exc:
                r.problem(p, str(exc), exc.hint)
                return text

        return _walk(value, fn, path)

    def cmd_lookup(expr: str) -> Any:
        raw = expr.startswith(RAW)
        expr = expr[len(RAW):] if raw else expr
        ns = expr.partition(".")[0]
        if raw and ns not in ("params", "matrix"):
            raise _Undefined(f"'${{raw:{expr}}}': raw splicing takes a params or matrix value, e.g. ${{raw:params.flags}}")
        return io_lookup(expr) if ns in ("inputs", "outputs", "stages") else r.value(expr, combo, used)

    cmd = None
    if "cmd" in fields:
        try:
            if "\0" in fields["cmd"]:
                raise _Undefined(_NUL)
            cmd = splice_cmd(fields["cmd"], cmd_lookup, ("outputs.",), r.limits.string_bytes)
        except _Undefined as exc:
            r.problem(base + ("cmd",), str(exc), exc.hint)
            cmd = fields["cmd"]
    config = io_pass(fields.get("with") or {}, base + ("with",))
    env = {k: render_scalar(v) for k, v in io_pass(fields.get("env") or {}, base + ("env",)).items()}
    # A NUL cannot reach a process (argv, environment, file names): say so now, not at run time.
    for field, table in (("inputs", inputs), ("outputs", outputs), ("env", env)):
        for key, text in table.items():
            if "\0" in text and base + (field, key) not in r.bad_paths:
                r.problem(base + (field, key), _NUL)

    needs: list[str] = []
    for i, need in enumerate(fields.get("needs") or []):
        if need in expanded:
            needs.extend(s for s, _, _, _ in expanded[need])
        elif need in ids:
            needs.append(need)
        elif need.split("[", 1)[0] not in r.skip:
            r.problem(base + ("needs", i), f"no stage named '{need}'", did_you_mean(need, r.names))
    for dotted in fields.get("params") or []:
        try:
            used[dotted] = lookup_dotted(r.params, dotted, "params")
        except _Undefined as exc:
            r.problem(base + ("params",), str(exc), exc.hint)

    return StageSpec(
        id=sid,
        base=name,
        location=r.doc.location(base, key=True),
        cmd=cmd,
        uses=fields.get("uses"),
        config=config,
        inputs={k: v for k, v in inputs.items() if k not in skipped} if skipped else inputs,
        outputs=outputs,
        needs=tuple(dict.fromkeys(needs)),
        refs=refs,
        param_deps=dict(sorted(used.items())),
        matrix=combo,
        env=env,
        retries=int(fields.get("retries", 0)),
        timeout=parse_duration(fields["timeout"]) if "timeout" in fields else None,
        cache=bool(fields.get("cache", True)),
        desc=str(fields.get("desc", "")),
        source={k: raw[k] for k in ("cmd", "with", "env") if k in raw},
    )


def _pick_instance(
    target: str,
    combo: Mapping[str, Any],
    expanded: Mapping[str, list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]],
    ids: Mapping[str, tuple[str, dict[str, Any]]],
    index: dict[str, tuple[tuple[str, ...], dict[tuple[Any, ...], str]]],
) -> str:
    if target in ids and "[" in target:
        return target
    if target not in expanded:
        bare = target.split("[", 1)[0]
        raise _Undefined(f"no stage named '{target}'", did_you_mean(bare, list(expanded)))
    insts = expanded[target]
    if len(insts) == 1:
        return insts[0][0]
    # A matrix stage referring to a matrix stage over the same axes takes the matching instance,
    # found through an index so that M instances referring to M instances cost M, not M².
    if target not in index:
        axes = tuple(insts[0][2])
        index[target] = (axes, {})
        for sid, _, their, _ in insts:
            index[target][1].setdefault(tuple(_hashable(their[k]) for k in axes), sid)
    axes, by_values = index[target]
    found = by_values.get(tuple(_hashable(combo[k]) for k in axes)) if all(k in combo for k in axes) else None
    if found is not None:
        return found
    raise _Undefined(f"stage '{target}' is a matrix; refer to one instance, e.g. {insts[0][0]}")


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
