"""Validated document + overrides → a frozen Spec: params applied, matrices expanded, `${…}` resolved.

Interpolation happens in two passes. The first resolves `${params.…}` and `${matrix.…}` in
every string field; the second resolves `${stages.X.outputs.Y}` in inputs and
`${inputs.N}` / `${outputs.N}` elsewhere. `${outputs.N}` in `cmd` is left for execution,
which points it at the stage's staging area. `$${` is a literal `${`.
"""

from __future__ import annotations

import copy
import itertools
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from engine.errors import KeyPath, Location, Problem, SpecError, did_you_mean
from engine.load import Document, load_file
from engine.model import Spec, StageSpec

_REF = re.compile(r"\$\$\{|\$\{\s*([^{}]*?)\s*\}")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KEEP_FOR_LATER = ("inputs.", "outputs.", "stages.")


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


def interpolate(text: str, lookup: Callable[[str], Any], keep: Sequence[str] = ()) -> Any:
    """Replace each `${expr}` by `lookup(expr)`; a string that is exactly one `${…}` keeps its type."""
    if "$" not in text:
        return text
    whole = _REF.fullmatch(text)
    if whole and whole.group(1) is not None and not whole.group(1).startswith(tuple(keep)):
        return lookup(whole.group(1))

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr is None:
            return "$${" if keep else "${"  # `$${` stays escaped until the last pass
        if expr.startswith(tuple(keep)):
            return m.group(0)
        value = lookup(expr)
        if isinstance(value, dict):
            raise _Undefined(f"'${{{expr}}}' is a mapping and cannot be embedded in a string")
        return render_scalar(value)

    return _REF.sub(sub, text)


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


def render_cmd(cmd: str, outputs: Mapping[str, str]) -> str:
    """The last pass over a `cmd`: `${outputs.N}` → `outputs[N]` (final or staging path), `$${` → `${`."""
    return interpolate(cmd, lambda expr: shlex.quote(outputs[expr.partition(".")[2]]))


# ---------------------------------------------------------------- params


def apply_overrides(doc: Document, params: dict[str, Any], params_file: Path | None, sets: Sequence[str]) -> dict[str, Any]:
    params = copy.deepcopy(params)
    problems: list[Problem] = []
    if params_file is not None:
        extra = load_file(params_file)
        if not isinstance(extra.data, dict):
            raise SpecError([Problem(Location(str(params_file), 1, 1), "a params file must hold a mapping")])
        _deep_merge(params, extra.data)
    for item in sets:
        key, sep, raw = item.partition("=")
        where = Location(f"--set {item}")
        if not sep or not key:
            problems.append(Problem(where, "expected KEY=VALUE, e.g. --set model.C=0.5"))
            continue
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        node = params
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                problems.append(Problem(where, f"params.{'.'.join(parts[: i + 1])} is not a mapping", hint=did_you_mean(part, node)))
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
    def __init__(self, doc: Document, params: dict[str, Any]):
        self.doc = doc
        self.params = params
        self.problems: list[Problem] = []
        self.bad_paths: set[KeyPath] = set()  # already reported: later passes stay quiet there

    def problem(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        self.bad_paths.add(path)
        self.problems.append(Problem(self.doc.location(path), message, path, hint))

    def expand(self, name: str, raw: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        """One (fields, matrix values, params used) per matrix combination, first pass applied."""
        matrix_raw = raw.get("matrix") or {}
        axes: dict[str, list[Any]] = {}
        for key, values in matrix_raw.items():
            path = ("stages", name, "matrix", key)
            if isinstance(values, str):
                used: dict[str, Any] = {}
                values = self.first_pass(values, path, {}, used)
            if not isinstance(values, list) or not values:
                self.problem(path, f"matrix '{key}' must be a non-empty list")
                return []
            axes[key] = values
        out = []
        for combo_values in itertools.product(*axes.values()) if axes else [()]:
            combo = dict(zip(axes, combo_values))
            used = {}
            fields = {k: v for k, v in raw.items() if k != "matrix"}
            fields = _walk(fields, lambda s, p: self.first_pass(s, p, combo, used), ("stages", name))
            out.append((fields, combo, used))
        return out

    def first_pass(self, text: str, path: KeyPath, combo: Mapping[str, Any], used: dict[str, Any]) -> Any:
        def lookup(expr: str) -> Any:
            ns, _, rest = expr.partition(".")
            if ns == "params" and rest:
                value = lookup_dotted(self.params, rest, "params")
                used[rest] = value
                return value
            if ns == "matrix" and rest:
                if rest not in combo:
                    raise _Undefined(f"'matrix.{rest}' is not defined for this stage", did_you_mean(rest, combo))
                return combo[rest]
            known = ["params", "matrix", "inputs", "outputs", "stages"]
            raise _Undefined(f"unknown reference '${{{expr}}}'", did_you_mean(ns, known))

        try:
            return interpolate(text, lookup, keep=_KEEP_FOR_LATER)
        except _Undefined as exc:
            self.problem(path, str(exc), exc.hint)
            return text


def resolve(doc: Document, params: dict[str, Any], workspace: Path, file: Path) -> Spec:
    """Expand matrices and interpolate every `${…}`; raises SpecError with all problems."""
    r = _Resolver(doc, params)
    data = doc.data
    expanded: dict[str, list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]] = {}
    for name, raw in data["stages"].items():
        expanded[name] = [(matrix_id(name, combo), f, combo, used) for f, combo, used in r.expand(name, raw)]

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

    def stage_ref(expr: str, input_name: str) -> str:
        m = re.fullmatch(r"stages\.([A-Za-z0-9_-]+(?:\[[^\]]*\])?)\.outputs\.([A-Za-z0-9_]+)", expr)
        if not m:
            raise _Undefined(f"'${{{expr}}}' is not a stage output; write ${{stages.NAME.outputs.OUTPUT}}")
        target, out = m.groups()
        target_id = _pick_instance(target, combo, expanded, ids)
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

    def io_pass(value: Any, path: KeyPath, keep_outputs: bool) -> Any:
        # In a shell command a path is quoted, so a space in a file name cannot split an argument.
        lookup = (lambda e: shlex.quote(io_lookup(e))) if keep_outputs else io_lookup

        def fn(text: str, p: KeyPath) -> Any:
            if p in r.bad_paths:
                return text
            try:
                return interpolate(text, lookup, keep=("outputs.",) if keep_outputs else ())
            except _Undefined as exc:
                r.problem(p, str(exc), exc.hint)
                return text

        return _walk(value, fn, path)

    cmd = io_pass(fields["cmd"], base + ("cmd",), keep_outputs=True) if "cmd" in fields else None
    config = io_pass(fields.get("with") or {}, base + ("with",), keep_outputs=False)
    env = {k: render_scalar(v) for k, v in io_pass(fields.get("env") or {}, base + ("env",), False).items()}

    needs: list[str] = []
    for i, need in enumerate(fields.get("needs") or []):
        if need in expanded:
            needs.extend(s for s, _, _, _ in expanded[need])
        elif need in ids:
            needs.append(need)
        else:
            r.problem(base + ("needs", i), f"no stage named '{need}'", did_you_mean(need, list(expanded)))
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
        inputs=inputs,
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
) -> str:
    if target in ids and "[" in target:
        return target
    if target not in expanded:
        bare = target.split("[", 1)[0]
        raise _Undefined(f"no stage named '{target}'", did_you_mean(bare, list(expanded)))
    insts = expanded[target]
    if len(insts) == 1:
        return insts[0][0]
    # A matrix stage referring to a matrix stage over the same axes takes the matching instance.
    for sid, _, their, _ in insts:
        if all(k in combo and combo[k] == v for k, v in their.items()):
            return sid
    raise _Undefined(f"stage '{target}' is a matrix; refer to one instance, e.g. {insts[0][0]}")
