"""Lazy discovery of stage plugins: built-ins and third parties alike, through entry points."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from sluice.engine.errors import did_you_mean
from sluice.engine.plugin import Plugin, Port

GROUP = "sluice.stages"
_PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # as the pipeline schema allows


class PluginLoadError(Exception):
    """A plugin name is unknown or its class breaks the contract; the caller adds the location."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message)


@dataclass(frozen=True)
class Registry:
    """Entry points by plugin name; a plugin's module is imported only when first asked for."""

    entries: dict[str, EntryPoint]
    _loaded: dict[str, type[Plugin]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def discover(cls) -> Registry:
        return cls({ep.name: ep for ep in entry_points(group=GROUP)})

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
        _check_contract(name, cls)
        self._loaded[name] = cls
        return cls

    def instance(self, name: str) -> Plugin:
        return self.load(name)()


def _check_contract(name: str, cls: object) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginLoadError(f"plugin '{name}' is not a subclass of engine.plugin.Plugin")
    if getattr(cls, "name", None) != name:
        raise PluginLoadError(f"plugin '{name}' declares name {getattr(cls, 'name', None)!r}")
    version = getattr(cls, "version", None)
    if not isinstance(version, str) or not version:
        raise PluginLoadError(f"plugin '{name}' has no version string")
    for kind in ("inputs", "outputs"):
        _check_ports(name, kind, getattr(cls, kind, None))
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(cls.config_schema)
    except SchemaError as exc:
        raise PluginLoadError(f"plugin '{name}' has an invalid config schema: {exc.message}") from exc


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
