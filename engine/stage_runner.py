"""Runs one plugin stage in a process of its own: the context arrives as JSON on stdin.

A process per stage gives plugins the same timeout, kill-on-Ctrl-C and log capture as `cmd`
stages, and keeps a crashing plugin from taking the scheduler down with it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from engine.errors import StageFailed
from engine.model import Spec, StageSpec
from engine.plugin import StageContext
from engine.registry import Registry


def stage_context(stage: StageSpec, spec: Spec, outputs: Mapping[str, str], state_dir: Path, log: logging.Logger) -> StageContext:
    """The context a plugin stage sees; `outputs` are workspace-relative (staging or final) paths."""
    ws = spec.workspace
    return StageContext(
        stage=stage.id,
        config=stage.config,
        inputs={n: ws / p for n, p in stage.inputs.items()},
        outputs={n: ws / p for n, p in outputs.items()},
        params=spec.params,
        workspace=ws,
        state_dir=state_dir,
        log=log,
        pipeline=spec.name,
    )


def payload(ctx: StageContext, uses: str, result_file: Path) -> bytes:
    """`ctx` as JSON for the stage's own process; `context_from_payload` reads it back."""
    return json.dumps({
        "stage": ctx.stage,
        "uses": uses,
        "config": ctx.config,
        "inputs": {k: str(v) for k, v in ctx.inputs.items()},
        "outputs": {k: str(v) for k, v in ctx.outputs.items()},
        "params": ctx.params,
        "workspace": str(ctx.workspace),
        "state_dir": str(ctx.state_dir),
        "pipeline": ctx.pipeline,
        "result_file": str(result_file),
    }, default=str).encode()


def context_from_payload(payload: dict, log: logging.Logger) -> StageContext:
    return StageContext(
        stage=payload["stage"],
        config=payload["config"],
        inputs={k: Path(v) for k, v in payload["inputs"].items()},
        outputs={k: Path(v) for k, v in payload["outputs"].items()},
        params=payload["params"],
        workspace=Path(payload["workspace"]),
        state_dir=Path(payload["state_dir"]),
        log=log,
        pipeline=payload.get("pipeline", ""),
    )


def main() -> int:
    payload = json.load(sys.stdin)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger(f"sluice.stage.{payload['stage']}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    result_file = Path(payload["result_file"])
    plugin = Registry.discover().instance(payload["uses"])
    try:
        plugin.run(context_from_payload(payload, log))
    except StageFailed as exc:
        print(f"stage failed: {exc}", file=sys.stderr)
        if exc.details:
            print(exc.details, file=sys.stderr)
        result_file.write_text(json.dumps({"error": str(exc), "details": exc.details}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
