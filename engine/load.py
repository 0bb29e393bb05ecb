"""YAML text → plain document plus a map from key path to source position.

Built on the event stream of libyaml (PyYAML's C parser) with an explicit stack, never
recursion, so a document nested thousands of levels deep gets an error instead of a crash.
Only YAML's core tags are accepted, aliases are expanded under a size cap (no alias bombs),
duplicate keys and non-string keys (`yes:` read as a boolean) are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sluice.engine.errors import KeyPath, Location, Problem, SpecError
from sluice.engine.limits import DEFAULT, Limits

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()
_CORE = "tag:yaml.org,2002:"
_QUOTED = ("'", '"', "|", ">")
_SCALAR_TAGS = {f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}


@dataclass(frozen=True)
class Document:
    """A loaded YAML file: the data and where each value (and each key) came from."""

    file: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(repr=False)  # value start, 1-based
    key_positions: dict[KeyPath, tuple[int, int]] = field(repr=False)  # the key's own start

    def location(self, path: KeyPath, *, key: bool = False) -> Location:
        """The closest known position for `path` (walking up to its parent if needed)."""
        table = self.key_positions if key else self.positions
        p = tuple(path)
        while p:
            if p in table:
                return Location(self.file, *table[p])
            if not key and p in self.key_positions:
                return Location(self.file, *self.key_positions[p])
            p = p[:-1]
        return Location(self.file, *self.positions.get((), (1, 1)))


def over_limit(field: str, value: int, size: bool = False) -> str:
    """`over the 32 MiB limit (SLUICE_MAX_SPEC_BYTES)`: the bound and how to raise it."""
    shown = (f"{value // 2**20} MiB" if value % 2**20 == 0 else f"{value:,}-byte") if size else f"{value:,}"
    return f"over the {shown} limit (SLUICE_MAX_{field.upper()})"


def _too_big(name: str, size: int, limit: int) -> SpecError:
    shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size:,} bytes"
    return SpecError([Problem(Location(name), f"the file is {shown}, {over_limit('spec_bytes', limit, size=True)}")])


def load_file(path: Path, display: str | None = None, limits: Limits = DEFAULT) -> Document:
    """A spec or params file, its size checked before it is read (a repository is untrusted input)."""
    name = display or str(path)
    limit = limits.spec_bytes
    try:
        size = path.stat().st_size
        if size > limit:
            raise _too_big(name, size, limit)
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # a pipe or special file has no size to stat
        if len(data) > limit:
            raise _too_big(name, len(data), limit)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(Location(name), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(Location(name), f"cannot read file: {exc}")]) from None
    return load_text(text, name, limits)


def load_text(text: str, file: str, limits: Limits = DEFAULT) -> Document:
    builder = _Builder(file, limits)
    try:
        for event in yaml.parse(text, Loader=_Loader):
            builder.feed(event)
    except _Abort:
        pass  # the builder recorded the problem
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        message = f"invalid YAML: {exc.problem or exc.context}"
        if "maximum nesting depth" in message:
            # libyaml >= 0.2.5 (PyYAML 6.0.4 wheels) stops at 1,000 levels while scanning ahead,
            # before our own, lower bound has seen the events: say it the same way.
            message = (
                _too_deep(limits.yaml_depth)
                if limits.yaml_depth < 1000
                else "the document is nested more than 1,000 levels deep (libyaml's own limit)"
            )
        raise SpecError([Problem(where, message)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(Location(file), f"invalid YAML: {exc}")]) from None
    if builder.problems:
        raise SpecError(builder.problems)
    if builder.documents == 0:
        raise SpecError([Problem(Location(file, 1, 1), "the file is empty; expected a mapping with 'version' and 'stages'")])
    if builder.documents > 1:
        raise SpecError([Problem(Location(file, 1, 1), "the file holds several YAML documents; expected one")])
    return Document(file, builder.root, builder.positions, builder.key_positions)


def _too_deep(depth: int) -> str:
    return f"the document is nested more than {depth} levels deep (SLUICE_MAX_YAML_DEPTH)"


class _Abort(Exception):
    pass


@dataclass
class _Frame:
    container: dict[Any, Any] | list[Any]
    path: KeyPath
    anchor: str | None
    size: int = 1
    key: Any = None  # pending mapping key (mappings only)
    have_key: bool = False
    merges: list[dict[Any, Any]] = field(default_factory=list)


class _Builder:
    """Turns parser events into dicts, lists and scalars, recording positions as it goes."""

    def __init__(self, file: str, limits: Limits):
        self.file = file
        self.max_depth, self.max_nodes = limits.yaml_depth, limits.yaml_nodes
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.positions: dict[KeyPath, tuple[int, int]] = {}
        self.key_positions: dict[KeyPath, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.root: Any = None
        self.documents = 0
        self.nodes = 0

    def _loc(self, mark: Any) -> Location:
        return Location(self.file, mark.line + 1, mark.column + 1)

    def _fail(self, mark: Any, message: str) -> None:
        self.problems.append(Problem(self._loc(mark), message))
        raise _Abort

    def feed(self, ev: Any) -> None:
        kind = type(ev)
        if kind is yaml.ScalarEvent:
            self._value(self._scalar(ev), 1, ev)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if len(self.stack) >= self.max_depth:
                self._fail(ev.start_mark, _too_deep(self.max_depth))
            is_map = kind is yaml.MappingStartEvent
            self._check_tag(ev, "map" if is_map else "seq")
            path = self._child_path()
            if path is not None:
                self.positions[path] = (ev.start_mark.line + 1, ev.start_mark.column + 1)
            self.stack.append(_Frame({} if is_map else [], path or (), ev.anchor))
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = self.stack.pop()
            if frame.merges and isinstance(frame.container, dict):  # merges only ever wait on a mapping
                for merged in frame.merges:
                    for k, v in merged.items():
                        frame.container.setdefault(k, v)
            if frame.anchor:
                self.anchors[frame.anchor] = (frame.container, frame.size)
            self._value(frame.container, frame.size, ev, placed=True)
        elif kind is yaml.AliasEvent:
            if ev.anchor not in self.anchors:
                self._fail(ev.start_mark, f"unknown alias *{ev.anchor}")
            value, size = self.anchors[ev.anchor]
            self._value(value, size, ev)
        elif kind is yaml.DocumentStartEvent:
            self.documents += 1

    def _child_path(self) -> KeyPath | None:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return (*top.path, len(top.container))
        if top.have_key:
            return (*top.path, top.key)
        return None  # a complex (non-scalar) mapping key: rejected when it completes

    def _value(self, value: Any, size: int, ev: Any, placed: bool = False) -> None:
        self.nodes += size
        if self.nodes > self.max_nodes:
            self._fail(
                ev.start_mark,
                f"the document expands to more than {self.max_nodes:,} nodes (an alias bomb?), {over_limit('yaml_nodes', self.max_nodes)}",
            )
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        mark = ev.start_mark
        if isinstance(top.container, list):
            if not placed:
                self.positions[(*top.path, len(top.container))] = (mark.line + 1, mark.column + 1)
            top.container.append(value)
            return
        if not top.have_key:
            self._key(top, value, ev)
            return
        path = (*top.path, top.key)
        if not placed:
            self.positions[path] = (mark.line + 1, mark.column + 1)
        if top.key == "<<" and top.key not in top.container:
            merges = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merges):
                self._fail(mark, "a merge key '<<' takes a mapping or a list of mappings")
            top.merges.extend(merges)
        else:
            top.container[top.key] = value
        top.have_key = False

    def _key(self, top: _Frame, key: Any, ev: Any) -> None:
        mark = ev.start_mark
        if not isinstance(key, str):
            shown = getattr(ev, "value", None)
            if isinstance(key, (dict, list)) or shown is None:
                self._fail(mark, "mapping keys must be plain strings")
            kind = {bool: "a boolean", type(None): "null", int: "a number", float: "a number"}.get(type(key), "a non-string")
            self._fail(mark, f"key '{shown}' is read by YAML as {kind}; quote it: \"{shown}\"")
        if key in top.container:
            first = self.key_positions.get((*top.path, key))
            where = f" (first at line {first[0]})" if first else ""
            self._fail(mark, f"duplicate key '{key}'{where}")
        top.key, top.have_key = key, True
        self.key_positions[(*top.path, key)] = (mark.line + 1, mark.column + 1)

    def _check_tag(self, ev: Any, expected: str) -> None:
        tag = ev.tag
        if tag in (None, "!", f"{_CORE}{expected}"):
            return
        self._fail(ev.start_mark, f"YAML tag {_short(tag)} is not allowed; Sluice reads plain data only")

    def _scalar(self, ev: Any) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            if ev.style in _QUOTED or not ev.implicit[0]:
                return ev.value
            tag = _resolver.resolve(yaml.ScalarNode, ev.value, (True, False))
        elif tag not in _SCALAR_TAGS:
            self._fail(ev.start_mark, f"YAML tag {_short(tag)} is not allowed; Sluice reads plain data only")
        if tag == f"{_CORE}str" or tag == f"{_CORE}merge":
            return ev.value
        if tag in (f"{_CORE}timestamp", f"{_CORE}binary"):
            return ev.value  # kept as text: specs are JSON-shaped
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark)
        try:
            return _constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            self._fail(ev.start_mark, f"cannot read {ev.value!r} as {_short(tag)}: {exc}")


def _short(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
