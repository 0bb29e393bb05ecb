"""A real StageContext for calling a plugin's run/rollback directly, as the stage runner does."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sluice.engine.plugin import StageContext


def make_ctx(
    workspace: Path,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Path] | None = None,
    outputs: Mapping[str, str] | None = None,
    stage: str = "stage",
    pipeline: str = "test",
) -> StageContext:
    out = workspace / "out"
    return StageContext(
        stage=stage,
        config=dict(config or {}),
        inputs=dict(inputs or {}),
        outputs={name: out / rel for name, rel in (outputs or {}).items()},
        params={},
        workspace=workspace,
        state_dir=workspace / ".sluice" / "state" / stage,
        log=logging.getLogger(f"test.{stage}"),
        pipeline=pipeline,
    )
