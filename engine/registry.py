"""Lazy discovery of stage plugins: built-ins and third parties alike, through entry points."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from sluice.engine import schema_check
from sluice.engine.errors import did_you_mean
from sluice.engine.plugin import Plugin, Port

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

GROUP = "sluice.stages"
_PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # as the pipeline schema allows


class PluginLoadError(Exception):
    """A plugin name is unknown or its class breaks the contract; the caller adds the location."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message)


@dataclass(frozen=True)
class ConfigChecks:
    """A plugin's compiled "valid?" checks of its `with:` block; None where only jsonschema can tell."""

    resolved: schema_check.Check | None  # after `${…}` resolution
    written: schema_check.Check | None  # as written, where a bare `${…}` may stand for any value


@dataclass(frozen=True)
class Registry:
    """Entry points by plugin name, read when first needed (a pipeline of `cmd` stages never
    imports importlib.metadata); a plugin's module is imported only when first asked for."""

    _loaded: dict[str, type[Plugin]] = field(default_factory=dict, repr=False, compare=False)
    _checks: dict[str, ConfigChecks] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def discover(cls) -> Registry:
        return cls()

    @cached_property
    def entries(self) -> dict[str, EntryPoint]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=GROUP)}

    def names(self) -> list[str]:
        return sorted(self.entries)

    def load(self, name: str) -> type[Plugin]:
        if name in self._loaded:
            return self._loaded[name]
        ep = self.entries.get(name)
        if ep is None:
            raise PluginLoadError(f"unknown stage plugin '{name}'", did_you_mean(name, self.entries))
        try:
            cls: type[Plugin] = ep.load()  # _check_contract below makes it so
        except Exception as exc:  # a broken third-party module must not crash validation
            raise PluginLoadError(f"plugin '{name}' failed to import ({ep.value}): {exc}") from exc
        resolved = _check_contract(name, cls)
        schema = cls.config_schema
        # An `if` may pick its branch by a value that is still a `${…}`: jsonschema judges those.
        written = None if schema_check.has_conditions(schema) else schema_check.compiled(schema_check.with_references(schema))
        self._checks[name] = ConfigChecks(resolved.check, written if resolved.check else None)
        self._loaded[name] = cls
        return cls

    def instance(self, name: str) -> Plugin:
        return self.load(name)()

    def checks(self, name: str) -> ConfigChecks:
        self.load(name)
        return self._checks[name]


def _check_contract(name: str, cls: object) -> schema_check.Entry:
    """Raises PluginLoadError if `cls` breaks the contract; its schema's record if it keeps it."""
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginLoadError(f"plugin '{name}' is not a subclass of engine.plugin.Plugin")
    if getattr(cls, "name", None) != name:
        raise PluginLoadError(f"plugin '{name}' declares name {getattr(cls, 'name', None)!r}")
    version = getattr(cls, "version", None)
    if not isinstance(version, str) or not version:
        raise PluginLoadError(f"plugin '{name}' has no version string")
    for kind in ("inputs", "outputs"):
        _check_ports(name, kind, getattr(cls, kind, None))
    schema = cls.config_schema
    known = schema_check.lookup(schema)  # stored only after passing the check below
    if known is not None:
        return known
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise PluginLoadError(f"plugin '{name}' has an invalid config schema: {exc.message}") from exc
    return schema_check.store(schema)


def _check_ports(name: str, kind: str, ports: object) -> None:
    if ports is None:
        return
    if not (isinstance(ports, tuple) and all(isinstance(p, Port) for p in ports)):
        raise PluginLoadError(f"plugin '{name}': {kind} must be a tuple of engine.plugin.Port (or None), got {ports!r}")
    seen: set[str] = set()
    for port in ports:
        if not (isinstance(port.name, str) and _PORT_NAME.fullmatch(port.name)):
            raise PluginLoadError(f"plugin '{name}' declares {kind[:-1]} {port.name!r}: not a name (letters, digits, _)")
        if port.name in seen:
            raise PluginLoadError(f"plugin '{name}' declares {kind[:-1]} '{port.name}' twice")
        seen.add(port.name)
