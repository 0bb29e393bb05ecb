"""Validated document + overrides → a frozen Spec: params applied, matrices expanded, `${…}` resolved.

Interpolation happens in two passes. The first resolves `${params.…}` and `${matrix.…}` in
every string field; the second resolves `${stages.X.outputs.Y}` in inputs and
`${inputs.N}` / `${outputs.N}` elsewhere. `${outputs.N}` in `cmd` is left for execution,
which points it at the stage's staging area. `$${` is a literal `${`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sluice.engine.errors import KeyPath, Location, Problem, SpecError, did_you_mean
from sluice.engine.interpolate import NUL as _NUL
from sluice.engine.interpolate import Undefined as _Undefined
from sluice.engine.interpolate import interpolate, lookup_dotted, render_scalar
from sluice.engine.limits import DEFAULT, Limits
from sluice.engine.load import Document, load_file, load_text, over_limit
from sluice.engine.model import SecretRef, Spec, StageSpec
from sluice.engine.shell import RAW, splice_cmd

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KEEP_FOR_LATER = ("inputs.", "outputs.", "stages.")
_NAMESPACES = ("params", "matrix", "inputs", "outputs", "stages")


class _Skipped(Exception):
    """A reference to a stage left out of resolution."""


def parse_duration(value: float | int | str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))


def _walk(value: Any, fn: Callable[[str, KeyPath], Any], path: KeyPath) -> Any:
    if isinstance(value, str):
        return fn(value, path)
    if isinstance(value, dict):
        return {k: _walk(v, fn, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn, (*path, i)) for i, v in enumerate(value)]
    return value


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
                problems.append(
                    Problem(where, f"{so_far} is not defined in the pipeline (defined: {known})", hint=did_you_mean(part, node))
                )
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

    def expand(
        self, name: str, raw: Mapping[str, Any], axes: dict[str, list[Any]]
    ) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        """One (fields, matrix values, params used) per matrix combination, first pass applied."""
        out = []
        for combo_values in itertools.product(*axes.values()) if axes else [()]:
            combo = dict(zip(axes, combo_values, strict=True))
            used: dict[str, Any] = {}
            # `cmd` is resolved in one pass later, where each value is quoted for its place.
            fields = {k: v for k, v in raw.items() if k not in ("matrix", "cmd")}
            fields = _walk(fields, functools.partial(self.first_pass, combo=combo, used=used), ("stages", name))
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
        if ns == "secrets":
            # Interpolated, the value would sit in the resolved config, the fingerprint and the lock.
            name = rest or "NAME"
            raise _Undefined(
                f"'${{{expr}}}': secrets are never interpolated; declare it under the stage's secrets: and read it"
                f" as ${name} in cmd (an environment variable) or ctx.secrets[{name!r}] in a plugin"
            )
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
    doc: Document,
    params: dict[str, Any],
    workspace: Path,
    file: Path,
    skip: frozenset[str] = frozenset(),
    limits: Limits = DEFAULT,
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
            r.problem(
                ("stages", name, "matrix"),
                f"the matrix expands to {count:,} instances, {over_limit('matrix_instances', limits.matrix_instances)}",
            )
            all_axes[name] = None
            continue
        total += count
    if total > limits.stages:
        r.problem(("stages",), f"the pipeline expands to {total:,} stages, {over_limit('stages', limits.stages)}")
        raise SpecError(r.problems)
    expanded: dict[str, list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]] = {}
    for name, axes in all_axes.items():
        combos = r.expand(name, data["stages"][name], axes) if axes is not None else []
        expanded[name] = [(matrix_id(name, combo), f, combo, used) for f, combo, used in combos]

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
        path = (*base, "inputs", key)
        try:
            inputs[key] = interpolate(value, functools.partial(stage_ref, input_name=key))
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
        expr = expr[len(RAW) :] if raw else expr
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
            r.problem((*base, "cmd"), str(exc), exc.hint)
            cmd = fields["cmd"]
    config = io_pass(fields.get("with") or {}, (*base, "with"))
    env = {k: render_scalar(v) for k, v in io_pass(fields.get("env") or {}, (*base, "env")).items()}
    # A NUL cannot reach a process (argv, environment, file names): say so now, not at run time.
    for field, table in (("inputs", inputs), ("outputs", outputs), ("env", env)):
        for key, text in table.items():
            if "\0" in text and (*base, field, key) not in r.bad_paths:
                r.problem((*base, field, key), _NUL)

    secrets = tuple(
        SecretRef(key, env=str(source.get("env", "")), file=str(source.get("file", "")))
        for key, source in (fields.get("secrets") or {}).items()
    )
    for ref in secrets:
        if ref.name in env:
            r.problem((*base, "secrets", ref.name), f"'{ref.name}' is both in env and in secrets; keep it in one")
    needs: list[str] = []
    for i, need in enumerate(fields.get("needs") or []):
        if need in expanded:
            needs.extend(s for s, _, _, _ in expanded[need])
        elif need in ids:
            needs.append(need)
        elif need.split("[", 1)[0] not in r.skip:
            r.problem((*base, "needs", i), f"no stage named '{need}'", did_you_mean(need, r.names))
    for dotted in fields.get("params") or []:
        try:
            used[dotted] = lookup_dotted(r.params, dotted, "params")
        except _Undefined as exc:
            r.problem((*base, "params"), str(exc), exc.hint)

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
        secrets=secrets,
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
