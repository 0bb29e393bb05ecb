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


def _copy_stage(src: str) -> str:
    return f"version: 1\nstages:\n  x:\n    cmd: cat $(find -L {src} -type f | sort) > ${{outputs.o}}\n    inputs: {{raw: {src}}}\n    outputs: {{o: out.txt}}\n"


def test_an_input_under_a_symlink_leaving_the_workspace_is_refused_at_plan_time(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "raw.csv").write_text("secret\n")
    (ws.root / "data").symlink_to(elsewhere)
    ws.write("pipeline.yaml", _copy_stage("data/raw.csv"))
    for command in ("status", "run"):
        res = ws.sluice(command)
        assert res.code == 2, res.err
        assert (f"pipeline.yaml:5:19: stages.x.inputs.raw: input 'data/raw.csv' resolves outside the workspace"
                f" through symlink 'data' -> '{elsewhere}'") in res.err
    assert not (ws.root / "out.txt").exists()
    assert not list((ws.root / ".sluice").rglob("objects/*/*"))


def test_an_input_that_is_a_symlink_leaving_the_workspace_is_refused(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "raw.csv").write_text("secret\n")
    (ws.root / "raw.csv").symlink_to("../" * len(ws.root.parts) + str(elsewhere / "raw.csv").lstrip("/"))
    ws.write("pipeline.yaml", _copy_stage("raw.csv"))
    res = ws.sluice("run")
    assert res.code == 2 and "input 'raw.csv' resolves outside the workspace through symlink 'raw.csv' -> '../" in res.err


def test_symlinks_inside_a_directory_input(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "b.txt").write_text("secret\n")
    ws.write("real/a.txt", "a\n")
    ws.write("data/own.txt", "own\n")
    (ws.root / "data" / "inner").symlink_to("../real")  # stays inside: followed
    ws.write("pipeline.yaml", _copy_stage("data"))
    assert ws.run_json() == {"x": "ran"}
    ws.write("real/a.txt", "edited\n")
    assert ws.run_json() == {"x": "ran"}  # the file behind the inner link is part of the input
    (ws.root / "data" / "leak").symlink_to(elsewhere)
    res = ws.sluice("run")
    assert res.code == 2
    assert f"stages.x.inputs.raw: input 'data' resolves outside the workspace through symlink 'data/leak' -> '{elsewhere}'" in res.err


@pytest.mark.parametrize("target", [".", "..", "loop"])
def test_a_symlink_loop_in_a_directory_input_is_a_clean_error(ws: Workspace, target: str) -> None:
    ws.write("data/a.txt", "a\n")
    (ws.root / "data" / "loop").symlink_to(target)  # "loop" points at itself
    ws.write("pipeline.yaml", _copy_stage("data"))
    res = ws.sluice("run")
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert "stages.x.inputs.raw: input 'data'" in res.err and "loop" in res.err
