"""Nothing the engine reads or writes for a stage leaves the workspace, symlinks or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Workspace

ONE_STAGE = "version: 1\nstages:\n  a:\n    cmd: echo made > ${outputs.o}\n    outputs: {o: out.txt}\n"


def test_a_symlinked_pipeline_file_keeps_the_workspace_where_the_link_is(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    shared = tmp_path_factory.mktemp("shared")
    (shared / "pipeline.yaml").write_text(ONE_STAGE)
    (ws.root / "pipeline.yaml").symlink_to(shared / "pipeline.yaml")
    assert ws.run_json() == {"a": "ran"}
    assert ws.read("out.txt") == "made\n"
    assert (ws.root / "sluice.lock").is_file() and (ws.root / ".sluice").is_dir()
    assert sorted(p.name for p in shared.iterdir()) == ["pipeline.yaml"]
    assert ws.run_json() == {"a": "skipped"}
