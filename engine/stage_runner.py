"""Runs one plugin stage in a process of its own: the context arrives as JSON on stdin.

A process per stage gives plugins the same timeout, kill-on-Ctrl-C and log capture as `cmd`
stages, and keeps a crashing plugin from taking the scheduler down with it.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sluice.engine.errors import StageFailed
from sluice.engine.model import Spec, StageSpec
from sluice.engine.plugin import StageContext
from sluice.engine.registry import PluginLoadError, Registry
from sluice.engine.secret import Masker


def stage_context(
    stage: StageSpec,
    spec: Spec,
    outputs: Mapping[str, str],
    state_dir: Path,
    log: logging.Logger,
    secrets: Mapping[str, str] | None = None,
    input_digests: Mapping[str, Mapping[str, str]] | None = None,
) -> StageContext:
    """The context a plugin stage sees; `outputs` are workspace-relative (staging or final) paths.

    `input_digests`: what the planner hashed for this attempt (`PlanItem.inputs`); none for a rollback.
    """
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
        secrets=dict(secrets or {}),
        input_digests=frozen_digests(input_digests or {}),
    )


def frozen_digests(digests: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    """Read-only all the way down: a plugin cannot edit the digests it is meant to check against."""
    return MappingProxyType({name: MappingProxyType(dict(files)) for name, files in digests.items()})


def payload(ctx: StageContext, uses: str, result_file: Path, log_file: Path | None = None) -> bytes:
    """`ctx` as JSON for the stage's own process; `context_from_payload` reads it back.

    `log_file` is where the process's output goes; a crash's traceback is kept beside it.
    It carries the stage's secrets: send it through a pipe, never write it to a file.
    """
    return json.dumps(
        {
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
            "log_file": str(log_file) if log_file else "",
            "secrets": dict(ctx.secrets),
            "input_digests": {name: dict(files) for name, files in ctx.input_digests.items()},
        },
        default=str,
    ).encode()


def context_from_payload(payload: dict[str, Any], log: logging.Logger) -> StageContext:
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
        secrets=payload.get("secrets") or {},
        input_digests=frozen_digests(payload.get("input_digests") or {}),
    )


def main() -> int:
    payload = json.load(sys.stdin)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger(f"sluice.stage.{payload['stage']}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    result_file = Path(payload["result_file"])
    uses = payload["uses"]
    # What this process writes to files itself is masked here; its output, by the engine.
    mask = Masker((payload.get("secrets") or {}).values())
    try:
        plugin = Registry.discover().instance(uses)
    except PluginLoadError as exc:  # imported fine for `validate`, not in this process (env, files)
        return _fail(result_file, _crash_message(payload, str(exc), mask), mask=mask)
    try:
        plugin.run(context_from_payload(payload, log))
    except StageFailed as exc:
        return _fail(result_file, str(exc), exc.details, mask)
    except Exception as exc:  # noqa: BLE001  (a bug in the plugin: one paragraph on the console, the traceback in a file
        return _fail(result_file, _crash_message(payload, f"{uses} raised {type(exc).__name__}: {exc}", mask), mask=mask)
    return 0


def _crash_message(payload: Mapping[str, Any], what: str, mask: Masker) -> str:
    """`what; traceback in PATH` on one line (the reporter names the stage); the traceback goes beside the log."""
    text = " ".join(what.split())
    text = text if len(text) <= 500 else text[:497] + "..."
    trace = mask.text(traceback.format_exc())
    log_file = payload.get("log_file")
    if not log_file:
        print(trace, file=sys.stderr)
        return f"{text}; traceback in the stage log"
    path = Path(log_file).with_suffix(".traceback")
    path.write_text(trace)
    try:
        shown = path.relative_to(payload["workspace"])
    except ValueError:
        shown = path
    return f"{text}; traceback in {shown}"


def _fail(result_file: Path, error: str, details: str = "", mask: Masker | None = None) -> int:
    if mask:
        error, details = mask.text(error), mask.text(details)
    print(f"stage failed: {error}", file=sys.stderr)
    if details:
        print(details, file=sys.stderr)
    result_file.write_text(json.dumps({"error": error, "details": details}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
