"""Bounds on the work any input can cause: a repository (spec, params file, lock) is untrusted.

Each bound has a default that a real project stays far below and can be raised through an
environment variable, for the rare pipeline that needs more. Read once per command, passed
down as a frozen value: no module-level mutable state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sluice.engine.errors import Location, Problem, SpecError

_ENV_PREFIX = "SLUICE_MAX_"


@dataclass(frozen=True)
class Limits:
    """The bounds; `SLUICE_MAX_<FIELD>` (upper case) overrides a field, e.g. SLUICE_MAX_SPEC_BYTES."""

    spec_bytes: int = 32 * 1024 * 1024  # a spec or params file, checked before parsing
    lock_bytes: int = 256 * 1024 * 1024  # sluice.lock: ~600 bytes a stage, so ~400,000 stages
    yaml_depth: int = 100  # nesting levels of any YAML document
    yaml_nodes: int = 2_000_000  # nodes after alias expansion; a 10,000-stage spec is ~200,000
    matrix_instances: int = 10_000  # instances of one matrix stage, checked before expanding
    stages: int = 100_000  # stages after every matrix is expanded
    string_bytes: int = 1024 * 1024  # any string after `${…}` interpolation

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for f in fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                value = int(raw)
            except ValueError:
                value = 0
            if value < 1:
                name = _ENV_PREFIX + f.name.upper()
                raise SpecError([Problem(Location(f"${name}"), f"must be a positive whole number, got {raw!r}")])
            values[f.name] = value
        return cls(**values)


DEFAULT = Limits()
