"""The stage plugin contract: the only engine module that `stages/` (and third parties) import.

A plugin is a class with a `name`, a `version`, a JSON Schema for its `with:` block, the
`inputs` and `outputs` it reads and writes, and a `run(ctx)` method. Register it under the
entry-point group `sluice.stages`:

    [project.entry-points."sluice.stages"]
    "acme.score" = "acme_sluice.score:ScoreStage"

Keep heavy imports (pandas, sklearn, docker) inside `run`/`preflight` so `sluice validate`,
which imports the plugin module to read its schema, stays fast.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sluice.engine.errors import ConfigProblem, KeyPath, StageFailed, did_you_mean

__all__ = ["ConfigProblem", "KeyPath", "Plugin", "Port", "StageContext", "StageFailed", "did_you_mean", "write_json"]


@dataclass(frozen=True)
class Port:
    """A named input or output of a plugin stage."""

    name: str
    required: bool = True
    desc: str = ""
    # As the stage's only output, any name will do (sklearn.train writes "its one output").
    any_name: bool = False
    # A report worth reading when the stage fails (a gate's verdicts): moved into place even
    # then, though never cached nor recorded in the lock. Only for outputs.
    keep_on_failure: bool = False


@dataclass(frozen=True)
class StageContext:
    """Everything a stage may see. Paths are absolute; write outputs only to `outputs`."""

    stage: str  # stage id, e.g. "train" or "report[fold=0]"
    config: Mapping[str, Any]  # the resolved `with:` block
    inputs: Mapping[str, Path]
    outputs: Mapping[str, Path]  # in a staging area; moved into place only if `run` succeeds (reports: always)
    params: Mapping[str, Any]  # the pipeline's resolved params
    workspace: Path
    # Kept across runs (e.g. "last accepted metrics"). A staged copy: what the stage writes here
    # replaces the kept state only if the stage succeeds and its outputs are in place.
    state_dir: Path
    log: logging.Logger
    pipeline: str = ""  # the pipeline's `name`
    # The stage's `secrets:`, name → value. Out of repr, so logging a context cannot print them;
    # whatever the stage prints is masked in its log anyway.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # What the engine hashed of each input when it decided to run this attempt (the digests in its
    # fingerprint and lock): input name → {path inside the input, "" for a file input → BLAKE3 hex}.
    # A stage that loads code-bearing files (pickles) checks the bytes it read against these, which
    # the input folder cannot rewrite. Empty when the engine hashed nothing (rollback, direct calls).
    input_digests: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)


class Plugin:
    """Base class for stage plugins. Subclasses set the class attributes and implement `run`."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when behaviour changes: cached results of older versions go stale
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    # Stages with side effects outside the workspace (deploys) are never skipped from cache.
    always_run: ClassVar[bool] = False
    # The names a stage's `inputs:` / `outputs:` may use; None (undeclared) allows any name.
    inputs: ClassVar[tuple[Port, ...] | None] = None
    outputs: ClassVar[tuple[Port, ...] | None] = None

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        """Cheap checks beyond the schema, run by `sluice validate`: no heavy imports here."""
        return ()

    def advice(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        """Remarks `sluice validate` shows as notes, not problems (a safer setting to consider); cheap like check()."""
        return ()

    def preflight(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        """Checks run by `sluice run` before any stage starts; may import heavy libraries."""
        return ()

    def run(self, ctx: StageContext) -> None:
        raise NotImplementedError

    def port_problems(self, inputs: Iterable[str], outputs: Iterable[str]) -> Iterator[ConfigProblem]:
        """Names a stage uses that the plugin does not declare, and required ones it leaves out.

        Paths are relative to the stage: `("inputs", name)` for a name, `("inputs",)` for a missing one.
        """
        for kind, verb, ports, given in (("input", "reads", self.inputs, list(inputs)), ("output", "writes", self.outputs, list(outputs))):
            if ports is None:
                continue
            declared = [p.name for p in ports]
            sole = len(given) == 1 and len(ports) == 1 and ports[0].any_name
            for name in given:
                if name not in declared and not sole:
                    unused = [d for d in declared if d not in given]
                    # One declared name left unused is the likely meaning, however unlike the typo.
                    hint = did_you_mean(name, unused or declared) or (unused[0] if len(unused) == 1 else None)
                    yield ConfigProblem(f"{self.name} {verb} no {kind} '{name}'", (f"{kind}s", name), hint)
            for port in ports:
                if port.required and port.name not in given and not sole:
                    yield ConfigProblem(f"{self.name} needs {kind} '{port.name}'", (f"{kind}s",))

    @classmethod
    def kept_on_failure(cls, outputs: Iterable[str]) -> frozenset[str]:
        """Which of a stage's output names are reports to keep when it fails."""
        given = list(outputs)
        ports = cls.outputs or ()
        if len(given) == 1 and len(ports) == 1 and ports[0].any_name:
            return frozenset(given) if ports[0].keep_on_failure else frozenset()
        keep = {p.name for p in ports if p.keep_on_failure}
        return frozenset(n for n in given if n in keep)

    def with_defaults(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with each top-level property's schema `default` filled in where it is absent."""
        props = self.config_schema.get("properties", {})
        return {**{k: v["default"] for k, v in props.items() if "default" in v}, **config}

    def rollback(self, ctx: StageContext) -> str:
        """Undo the last side effect of this stage (`sluice rollback STAGE`); returns what was done.

        `ctx.outputs` are the final (not staging) paths: the records the last run left there.
        """
        raise StageFailed(f"stage plugin '{self.name}' does not support rollback")


def write_json(path: Path, data: Any) -> None:
    """Write a JSON report the way every built-in stage does: sorted keys, trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
