"""A cheap "valid or not?" for a JSON Schema: its fastjsonschema code, compiled once and kept on disk.

Generating and compiling that code costs more than checking a small spec (~80 ms for the
pipeline schema), and jsonschema costs ~90 ms to import, so each compiled check is kept in the
user's cache folder, keyed by the schema and what shaped the code; a later process loads it in
well under a millisecond without importing either library. A hit also says the schema once
passed jsonschema's metaschema check (the registry stores a plugin's schema only after that).
Only the verdict comes from here: engine.validate still asks jsonschema for every message.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CACHE_ENV = "SLUICE_SCHEMA_CACHE"  # a folder for the compiled checks, or "off"
_FORMAT = "2"  # bump when what is stored, or how it is generated, changes

# Keywords that draft 7 (all fastjsonschema reads) and 2020-12 (what jsonschema applies) read
# alike. A schema with any other keyword, or a `$ref` beside a keyword that applies (draft 7
# ignores those), gets no compiled check and is always judged by jsonschema.
_SAME_IN_BOTH = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "patternProperties",
        "additionalProperties",
        "required",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "$ref",
        "$defs",
        "definitions",
    }
)
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")

# A `${…}` standing for a whole value, as engine.interpolate finds them.
REFERENCE_DEF = "reference"
REFERENCE = {
    "type": "string",
    "pattern": r"^\s*\$\{[^{}]+\}\s*$",
    "description": "A ${…} reference: replaced by its value (with its type) before the plugin's schema checks it.",
}
_VALUE_MAPS = ("properties", "patternProperties")
_VALUE_NODES = ("items", "additionalProperties", "contains")
_BRANCHES = ("anyOf", "oneOf", "allOf", "not", "if", "then", "else", "$defs", "definitions")

Check = Callable[[Any], Any]


class Invalid(ValueError):
    """What a compiled check raises; stands in for fastjsonschema's exceptions, so loading a
    cached check does not import fastjsonschema."""

    def __init__(self, message: str = "", value: Any = None, name: Any = None, definition: Any = None, rule: Any = None) -> None:
        super().__init__(message)


class _NoDecimal:
    """Stands in for decimal.Decimal in the code's type checks (sparing its import): no value of a spec is one."""


def accept_references(node: Any, value: bool = False) -> Any:
    """A copy of a `with:` schema in which every value may also be a bare `${…}`.

    `sluice validate` checks a plugin's config after resolving references, so the editor must
    not flag `test_size: "${params.test_size}"` where the plugin wants a number. The copy's
    `$ref`s point at `#/$defs/reference`, which the caller adds to the root.
    """
    if isinstance(node, list):
        return [accept_references(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, sub in node.items():
        if key in _VALUE_MAPS and isinstance(sub, dict):
            out[key] = {name: accept_references(s, value=True) for name, s in sub.items()}
        elif key in _VALUE_NODES and isinstance(sub, dict):
            out[key] = accept_references(sub, value=True)
        elif key == "prefixItems" and isinstance(sub, list):
            out[key] = [accept_references(s, value=True) for s in sub]
        elif key in _BRANCHES:
            out[key] = (
                accept_references(sub) if key not in ("$defs", "definitions") else {name: accept_references(s) for name, s in sub.items()}
            )
        else:
            out[key] = sub
    return {"anyOf": [out, {"$ref": f"#/$defs/{REFERENCE_DEF}"}]} if value else out


def with_references(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` as a root that also accepts a bare `${…}` for any value (see accept_references)."""
    root: dict[str, Any] = accept_references(schema)
    root["$defs"] = {**root.get("$defs", {}), REFERENCE_DEF: REFERENCE}
    return root


def portable(node: Any) -> bool:
    """Whether fastjsonschema (draft 7) and jsonschema (2020-12) give `node` the same verdicts."""
    if isinstance(node, bool):
        return True
    if not isinstance(node, dict):
        return False
    keys = set(node) - _ANNOTATIONS
    if not keys <= _SAME_IN_BOTH or ("$ref" in keys and keys != {"$ref"}):
        return False
    for key in keys:
        sub = node[key]
        if key in _SCHEMA_MAPS:
            if not (isinstance(sub, dict) and all(portable(s) for s in sub.values())):
                return False
        elif key in _SCHEMA_LISTS:
            if not (isinstance(sub, list) and all(portable(s) for s in sub)):
                return False
        elif key in ("items", "additionalProperties", "propertyNames", "contains", "not", "if", "then", "else"):
            if not portable(sub):  # a list-form `items` is prefixItems in 2020-12: not portable
                return False
        elif key == "$ref" and not (isinstance(sub, str) and sub.startswith("#/")):
            return False
    return True


def has_conditions(node: Any) -> bool:
    """Whether `if` appears anywhere: which branch applies depends on values, `${…}` ones included."""
    if isinstance(node, dict):
        return "if" in node or any(has_conditions(v) for k, v in node.items() if k not in _ANNOTATIONS)
    if isinstance(node, list):
        return any(has_conditions(v) for v in node)
    return False


@dataclass(frozen=True)
class Entry:
    """One schema's record: seen (and so checked) before, and its compiled check if it has one."""

    check: Check | None


def lookup(schema: Mapping[str, Any]) -> Entry | None:
    """The stored record of `schema`, or None if this schema has not been stored."""
    text = _canonical(schema)
    return _entry(_key(text), text, False) if text is not None else None


def store(schema: Mapping[str, Any]) -> Entry:
    """Compile `schema` (when portable) and remember it; the caller vouches that the schema is valid."""
    text = _canonical(schema)
    return (_entry(_key(text), text, True) if text is not None else None) or Entry(None)


def compiled(schema: Mapping[str, Any]) -> Check | None:
    """The compiled check of one of sluice's own schemas (trusted: no metaschema check needed)."""
    return (lookup(schema) or store(schema)).check


def valid(check: Check, data: Any) -> bool:
    """True if `check` passes `data`; False if it fails it or cannot judge it (a key that is no
    string, say): then jsonschema decides."""
    try:
        check(data)
    except Exception:  # noqa: BLE001 - any failure only means "ask jsonschema"
        return False
    return True


def _canonical(schema: Any) -> str | None:
    """The schema as one JSON text, or None if it is no JSON (a plugin's schema may be anything)."""
    if not isinstance(schema, Mapping):
        return None
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None


@cache
def _stamp() -> str:
    """What the stored code depends on besides the schema: this Python's bytecode, and the
    installed fastjsonschema (which wrote it) and jsonschema (whose metaschema passed it), found
    without importing them."""
    parts = [_FORMAT, importlib.util.MAGIC_NUMBER.hex(), sys.version]
    for name in ("fastjsonschema", "jsonschema"):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        st = os.stat(origin) if origin else None
        parts.append(f"{name}:{origin}:{st.st_mtime_ns if st else 0}:{st.st_size if st else 0}")
    return "\n".join(parts)


def _key(text: str) -> str:
    return hashlib.sha256(f"{_stamp()}\n{text}".encode()).hexdigest()


def cache_dir() -> Path | None:
    configured = os.environ.get(CACHE_ENV, "")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sluice" / "schema-checks"


@cache
def _entry(key: str, text: str, build: bool) -> Entry | None:
    folder = cache_dir()
    path = folder / f"{key}.bin" if folder else None
    if path is not None:
        try:
            stored = marshal.loads(path.read_bytes())
            if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == _FORMAT:
                return Entry(_load(stored[1]) if stored[1] is not None else None)
        except (OSError, EOFError, ValueError, TypeError):
            pass  # not stored yet, or unreadable: build it again
    if not build:
        return None
    schema = json.loads(text)
    code = _generate(schema) if portable(schema) else None
    if path is not None:
        _write(path, marshal.dumps((_FORMAT, code)))
    return Entry(_load(code) if code is not None else None)


def _generate(schema: dict[str, Any]) -> Any:
    import fastjsonschema

    source = fastjsonschema.compile_to_code(
        # Without `$id` the entry point is named `validate`; only local `$ref`s get here, which it does not change.
        {**{k: v for k, v in schema.items() if k != "$id"}, "$schema": "http://json-schema.org/draft-07/schema#"},
        use_default=False,  # it would fill `default`s into the data being checked
        use_formats=False,  # jsonschema, without a format checker, does not assert `format`
    )
    # The stand-in exceptions come in through the globals; without this line the code still
    # works, it just imports fastjsonschema when loaded.
    source = source.replace("from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n", "", 1)
    if "Decimal(" not in source:  # only `isinstance(x, (int, float, Decimal))`: parsed YAML holds no Decimal
        source = source.replace("from decimal import Decimal\n", "", 1)
    return compile(source, "<sluice schema check>", "exec")


def _load(code: Any) -> Check:
    namespace: dict[str, Any] = {
        "__name__": "sluice_schema_check",
        "JsonSchemaValueException": Invalid,
        "JsonSchemaValuesException": Invalid,
        "Decimal": _NoDecimal,
    }
    exec(code, namespace)
    check: Check = namespace["validate"]
    return check


def _write(path: Path, data: bytes) -> None:
    """Atomically, so a reader sees the whole record or none; a cache that cannot be written is skipped."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
