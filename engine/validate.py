"""The pipeline schema and each plugin's `with:` schema → every problem at once, with locations."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sluice import schemas
from sluice.engine import schema_check
from sluice.engine.errors import ConfigProblem, KeyPath, Problem, did_you_mean
from sluice.engine.load import Document
from sluice.engine.model import StageSpec
from sluice.engine.registry import PluginLoadError, Registry

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else type(value).__name__


def _validator(schema: Mapping[str, Any]) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


def schema_problems(
    doc: Document,
    schema: Mapping[str, Any],
    data: Any,
    prefix: KeyPath = (),
    skip_references: bool = False,
    check: schema_check.Check | None = None,
) -> list[Problem]:
    """Every schema violation in `data`, mapped to source positions under `prefix`.

    `check`, the schema compiled (engine.schema_check), answers "valid?" without importing
    jsonschema; only an invalid `data` pays for jsonschema, which finds and words every problem.
    """
    if check is not None and schema_check.valid(check, data):
        return []
    problems: list[Problem] = []
    for error in _validator(schema).iter_errors(data):
        if skip_references and _references_only(error):
            continue
        problems.extend(_translate(doc, error, prefix))
    return problems


_REFERENCE = re.compile(r"\$\{[^{}]+\}")


def _references_only(error: Any) -> bool:
    """The error is about a value that is exactly one `${…}`, or about a container holding one."""

    def has_ref(value: Any) -> bool:
        if isinstance(value, str):
            return bool(_REFERENCE.fullmatch(value.strip()))
        if isinstance(value, dict):
            return any(has_ref(v) for v in value.values())
        if isinstance(value, list):
            return any(has_ref(v) for v in value)
        return False

    return error.validator not in ("additionalProperties", "required") and has_ref(error.instance)


def _translate(doc: Document, error: Any, prefix: KeyPath) -> Iterable[Problem]:
    path = prefix + tuple(error.absolute_path)
    keyword, schema, instance = error.validator, error.schema, error.instance
    loc = doc.location(path)
    if keyword == "additionalProperties" and isinstance(instance, dict) and schema.get("additionalProperties") is False:
        known = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        unknown = [k for k in instance if k not in known and not any(p.search(str(k)) for p in patterns)]
        for key in unknown:
            where = doc.location((*path, key), key=True)
            yield Problem(where, f"unknown key '{key}'", (*path, key), did_you_mean(str(key), known))
        if unknown:
            return
    if keyword == "required" and "then" in error.absolute_schema_path and schema.get("description"):
        yield Problem(loc, schema["description"], path)
        return
    if keyword == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield Problem(loc, f"missing required key '{missing}'", path)
        return
    if keyword == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        names = " or ".join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)
        yield Problem(loc, f"expected {names}, got {_json_type(instance)} {_short(instance)}", path)
        return
    if "propertyNames" in error.absolute_schema_path and isinstance(instance, str):
        # jsonschema reports a bad key against its parent mapping; point at the key itself
        desc = schema.get("description") or f"must match {schema.get('pattern', 'the schema')}"
        yield Problem(doc.location((*path, instance), key=True), f"invalid name '{instance}': {desc}", (*path, instance))
        return
    if keyword == "oneOf" and all("required" in s for s in error.validator_value):
        keys = [s["required"][0] for s in error.validator_value]
        present = [k for k in keys if isinstance(instance, dict) and k in instance]
        shown = " or ".join(f"'{k}'" for k in keys)
        what = "both" if len(present) > 1 else "neither"
        yield Problem(loc, f"needs exactly one of {shown}, has {what}", path)
        return
    if keyword == "const":
        yield Problem(loc, f"must be {error.validator_value!r}, got {_short(instance)}", path)
        return
    if keyword == "enum":
        options = [str(o) for o in error.validator_value]
        hint = did_you_mean(str(instance), options) if isinstance(instance, str) else None
        yield Problem(loc, f"{_short(instance)} is not one of: {', '.join(options)}", path, hint)
        return
    description = schema.get("description")
    if keyword in ("oneOf", "anyOf", "pattern") and description:
        yield Problem(loc, f"{_short(instance)} is not valid: {description}", path)
        return
    yield Problem(loc, error.message, path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_document(doc: Document, registry: Registry) -> list[Problem]:
    """Schema problems of the whole file, and `uses:` names that are no installed plugin."""
    pipeline = schemas.load("pipeline")
    problems = schema_problems(doc, pipeline, doc.data, check=schema_check.compiled(pipeline))
    stages = doc.data.get("stages") if isinstance(doc.data, dict) else None
    if not isinstance(stages, dict):
        return problems
    for name, stage in stages.items():
        if isinstance(stage, dict) and isinstance(stage.get("uses"), str):
            at: KeyPath = ("stages", str(name), "uses")
            try:
                plugin = registry.instance(stage["uses"])
            except PluginLoadError as exc:
                problems.append(Problem(doc.location(at), str(exc), at, exc.hint))
                continue
            config = stage.get("with", {})
            if isinstance(config, dict):
                # As written, in the same pass as the schema, so every problem shows at once;
                # a bare `${…}` is skipped here and judged by its value after resolution.
                prefix: KeyPath = ("stages", str(name), "with")
                written = registry.checks(stage["uses"]).written
                problems.extend(schema_problems(doc, plugin.config_schema, config, prefix, skip_references=True, check=written))
            ports = [stage.get(kind) or {} for kind in ("inputs", "outputs")]
            if all(isinstance(p, dict) for p in ports):  # else the schema has said so
                # A port's own name (inputs.data) points at the key; a missing port at the mapping.
                problems += [located(doc, ("stages", str(name)), cp, key=len(cp.path) == 2) for cp in plugin.port_problems(*ports)]
    return problems


def located(doc: Document, prefix: KeyPath, cp: ConfigProblem, key: bool = False) -> Problem:
    """A plugin's ConfigProblem (its path relative to `prefix`) as a Problem at its place in the file."""
    at = prefix + tuple(cp.path)
    return Problem(doc.location(at, key=key), cp.message, at, cp.hint)


def broken_stages(problems: Iterable[Problem]) -> frozenset[str] | None:
    """The stages the schema problems are in, to leave out of resolution; None if no stage can be trusted.

    Resolution and compile still check the other stages, so a typo in one stage does not hide
    a bad reference in another, and nothing is reported twice.
    """
    names: set[str] = set()
    for p in problems:
        if len(p.path) >= 2 and p.path[0] == "stages":
            names.add(str(p.path[1]))
        elif not p.path or p.path[0] in ("stages", "params"):
            return None  # no stages mapping, or no params to resolve them with
    return frozenset(names)


def config_problems(doc: Document, registry: Registry, stages: Iterable[StageSpec]) -> list[Problem]:
    """Each plugin stage's resolved `with:` block against the plugin's schema and `check()`.

    Checked after `${…}` is resolved, so `test_size: "${params.test_size}"` is judged by the
    param's value and type; a matrix stage reports a problem once, not once per instance.
    """
    problems: dict[tuple[str, KeyPath], Problem] = {}
    for stage in stages:
        if not stage.uses:
            continue
        plugin = registry.instance(stage.uses)
        prefix: KeyPath = ("stages", stage.base, "with")
        # Unchanged by resolution: the schema pass in validate_document has already judged it.
        resolved = stage.config != stage.source.get("with", {})
        check = registry.checks(stage.uses).resolved
        found = schema_problems(doc, plugin.config_schema, stage.config, prefix, check=check) if resolved else []
        if not found:
            found = [located(doc, prefix, cp) for cp in plugin.check(stage.config)]
        for p in found:
            problems.setdefault((p.message, p.path), p)
    return list(problems.values())
