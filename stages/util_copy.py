"""util.copy: copies inputs to outputs; the smallest real plugin, used to test the engine."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, StageContext, StageFailed


class CopyStage(Plugin):
    name = "util.copy"
    version = "1"
    config_schema = schemas.load("stages/util.copy")

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        for src, dst in config.get("pairs", {}).items():
            if not dst:
                yield ConfigProblem(f"empty output name for input '{src}'", ("pairs", src))

    def run(self, ctx: StageContext) -> None:
        pairs = ctx.config.get("pairs") or {name: name for name in ctx.inputs}
        for src, dst in pairs.items():
            if src not in ctx.inputs:
                raise StageFailed(f"no input named '{src}'")
            if dst not in ctx.outputs:
                raise StageFailed(f"no output named '{dst}'")
            source, target = ctx.inputs[src], ctx.outputs[dst]
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
            ctx.log.info("copied %s → %s", src, dst)
