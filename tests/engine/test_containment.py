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
    return (
        f"version: 1\nstages:\n  x:\n    cmd: cat $(find -L {src} -type f | sort) > ${{outputs.o}}\n"
        f"    inputs: {{raw: {src}}}\n    outputs: {{o: out.txt}}\n"
    )


def test_an_input_under_a_symlink_leaving_the_workspace_is_refused_at_plan_time(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "raw.csv").write_text("secret\n")
    (ws.root / "data").symlink_to(elsewhere)
    ws.write("pipeline.yaml", _copy_stage("data/raw.csv"))
    for command in ("status", "run"):
        res = ws.sluice(command)
        assert res.code == 2, res.err
        assert (
            f"pipeline.yaml:5:19: stages.x.inputs.raw: input 'data/raw.csv' resolves outside the workspace"
            f" through symlink 'data' -> '{elsewhere}'"
        ) in res.err
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


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("outside")
    (folder / "f.txt").write_text("precious\n")
    (folder / "d").mkdir()
    (folder / "d" / "g.txt").write_text("also precious\n")
    return folder


def _one_output(out: str, cmd: str = "echo made > ${outputs.o}") -> str:
    return f"version: 1\nstages:\n  a:\n    cmd: {cmd}\n    outputs: {{o: {out}}}\n"


def test_a_cache_restore_never_writes_through_a_symlink(ws: Workspace, outside: Path) -> None:
    ws.write("pipeline.yaml", _one_output("link/f.txt"))
    assert ws.run_json() == {"a": "ran"}  # cached while link/ is a real folder
    for p in (ws.root / "link").iterdir():
        p.unlink()
    (ws.root / "link").rmdir()
    (ws.root / "link").symlink_to(outside)
    before = _snapshot(outside)
    res = ws.sluice("run", "--json")
    stage = res.json()["stages"]["a"]
    assert res.code == 1 and stage["outcome"] == "failed"
    assert stage["error"] == f"output 'link/f.txt' resolves outside the workspace through symlink 'link' -> '{outside}'"
    assert _snapshot(outside) == before


@pytest.mark.parametrize("out", ["link/f.txt", "link/d"])
def test_a_symlink_the_command_itself_creates_is_caught_before_the_commit(ws: Workspace, outside: Path, out: str) -> None:
    ws.write(
        "pipeline.yaml",
        _one_output(out, f"ln -s {outside} link && mkdir -p ${{outputs.o}} && rmdir ${{outputs.o}} && echo made > ${{outputs.o}}"),
    )
    before = _snapshot(outside)
    stage = ws.sluice("run", "--json").json()["stages"]["a"]
    assert stage["outcome"] == "failed"
    assert stage["error"] == f"output '{out}' resolves outside the workspace through symlink 'link' -> '{outside}'"
    assert _snapshot(outside) == before


def test_stale_outputs_are_not_removed_through_a_symlink(ws: Workspace, outside: Path) -> None:
    (ws.root / "link").symlink_to(outside)
    ws.write("pipeline.yaml", _one_output("link/d"))
    before = _snapshot(outside)
    for _ in range(2):  # the second run is planned against a lock that names no output
        stage = ws.sluice("run", "--json").json()["stages"]["a"]
        assert stage["outcome"] == "failed" and "through symlink 'link'" in stage["error"]
    assert _snapshot(outside) == before


@pytest.mark.parametrize("target", ["inside.txt", "OUTSIDE"])
def test_an_output_that_is_a_symlink_is_refused(ws: Workspace, outside: Path, target: str) -> None:
    target = target.replace("OUTSIDE", str(outside / "f.txt"))
    ws.write("inside.txt", "in\n")
    ws.write("pipeline.yaml", _one_output("out.txt", f"ln -s {target} ${{outputs.o}}"))
    before = _snapshot(outside)
    stage = ws.sluice("run", "--json").json()["stages"]["a"]
    assert stage["outcome"] == "failed"
    assert stage["error"] == f"output 'out.txt' is a symlink (-> '{target}'); a stage must write a file or a directory there"
    assert not (ws.root / "out.txt").exists() and not list((ws.root / ".sluice").rglob("objects/*/*"))
    # An existing link at the output path is refused too, not deleted or written through.
    (ws.root / "out.txt").symlink_to(target)
    ws.write("pipeline.yaml", _one_output("out.txt"))
    stage = ws.sluice("run", "--json").json()["stages"]["a"]
    assert stage["outcome"] == "failed" and "output 'out.txt' is a symlink" in stage["error"]
    assert (ws.root / "out.txt").is_symlink() and _snapshot(outside) == before


def test_a_plugin_state_folder_behind_a_symlink_is_refused(ws: Workspace, outside: Path) -> None:
    ws.write("in.txt", "x\n")
    ws.write(
        "pipeline.yaml",
        "version: 1\nstages:\n  copy:\n    uses: util.copy\n    with: {pairs: {src: dst}}\n"
        "    inputs: {src: in.txt}\n    outputs: {dst: out.txt}\n",
    )
    (ws.root / ".sluice" / "state").mkdir(parents=True)
    (ws.root / ".sluice" / "state" / "copy").symlink_to(outside)
    before = _snapshot(outside)
    stage = ws.sluice("run", "--json").json()["stages"]["copy"]
    assert stage["outcome"] == "failed"
    assert (
        stage["error"]
        == f"state folder '.sluice/state/copy' resolves outside the workspace through symlink '.sluice/state/copy' -> '{outside}'"
    )
    assert _snapshot(outside) == before and (ws.root / ".sluice" / "state" / "copy").is_symlink()


def test_a_sluice_folder_that_is_a_symlink_out_of_the_workspace_is_refused(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a: {cmd: 'echo a > ${outputs.o}', outputs: {o: a.txt}}\n")
    (ws.root / ".sluice").symlink_to(outside, target_is_directory=True)
    res = ws.sluice("run")
    assert res.code == 1
    assert "Sluice's folder '.sluice' resolves outside the workspace through symlink '.sluice'" in res.err
    assert "Traceback" not in res.err
    assert list(outside.iterdir()) == []  # no lock file, no cache, no run record written there
    assert not (ws.root / "a.txt").exists()
