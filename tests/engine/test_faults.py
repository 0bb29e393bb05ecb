"""Faults: a killed run, a corrupt cache object, a second concurrent run, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Workspace

SLOW = """\
version: 1
stages:
  quick:
    cmd: echo quick > ${outputs.o}
    outputs: {o: quick.txt}
  slow:
    cmd: echo partial > ${outputs.o}; touch started; sleep 60; echo done >> ${outputs.o}
    outputs: {o: slow.txt}
    needs: [quick]  # so quick is recorded before the test kills the run
"""


def _start(ws: Workspace) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", "run", "--jobs", "2"],
        cwd=ws.root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for(path: Path) -> None:
    for _ in range(300):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_sigkill_mid_stage_leaves_nothing_trusted(ws: Workspace) -> None:
    ws.write("pipeline.yaml", SLOW)
    proc = _start(ws)
    _wait_for(ws.root / "started")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: sluice and the stage
    proc.wait()
    assert not (ws.root / "slow.txt").exists()  # the partial output sat in staging only
    ws.write("pipeline.yaml", SLOW.replace("sleep 60", "sleep 0"))
    # quick finished before the kill: its run-cache entry lets the rerun skip it.
    assert ws.run_json() == {"quick": "skipped", "slow": "ran"}
    assert ws.read("slow.txt") == "partial\ndone\n"


def test_sigint_stops_cleanly_and_rerun_resumes(ws: Workspace) -> None:
    ws.write("pipeline.yaml", SLOW)
    proc = _start(ws)
    _wait_for(ws.root / "started")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out and "Traceback" not in out + err
    lock = ws.read("sluice.lock")
    assert "quick:" in lock and "slow:" not in lock
    assert not (ws.root / "slow.txt").exists()


def test_second_run_refuses_while_first_holds_the_workspace(ws: Workspace) -> None:
    ws.write("pipeline.yaml", SLOW)
    proc = _start(ws)
    try:
        _wait_for(ws.root / "started")
        lock_before = (ws.root / "sluice.lock").exists()
        res = ws.sluice("run")
        assert res.code == 3
        assert "another sluice run (run " in res.err and "is using" in res.err
        assert (ws.root / "sluice.lock").exists() == lock_before
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def _objects(ws: Workspace) -> list[Path]:
    return [p for p in (ws.root / ".sluice/cache/objects").rglob("*") if p.is_file()]


def test_corrupt_cache_object_is_detected_and_recomputed(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        "version: 1\nparams: {n: 1}\nstages:\n  s:\n    cmd: echo n=${params.n} > ${outputs.o}\n    outputs: {o: out.txt}\n",
    )
    ws.run_json()
    ws.run_json("--set", "n=2")
    for obj in _objects(ws):  # damage every object in the store
        os.chmod(obj, 0o644)
        obj.write_text("garbage\n")
    assert ws.run_json() == {"s": "ran"}  # n=1 again: the cached copy fails verification
    assert ws.read("out.txt") == "n=1\n"
    assert ws.run_json("--set", "n=2") == {"s": "ran"}
    assert ws.read("out.txt") == "n=2\n"


def test_deleted_cache_object_is_not_trusted(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        "version: 1\nparams: {n: 1}\nstages:\n  s:\n    cmd: echo n=${params.n} > ${outputs.o}\n    outputs: {o: out.txt}\n",
    )
    ws.run_json()
    ws.run_json("--set", "n=2")
    for obj in _objects(ws):
        obj.unlink()
    assert ws.run_json() == {"s": "ran"}
    assert ws.read("out.txt") == "n=1\n"


def test_corrupt_lock_file_is_an_error_not_a_crash(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  s: {cmd: 'echo x > ${outputs.o}', outputs: {o: o.txt}}\n")
    ws.write("sluice.lock", "version: 1\nstages: [unclosed\n")
    res = ws.sluice("run")
    assert res.code == 2 and "sluice.lock" in res.err and "not valid YAML" in res.err
    assert ws.read("sluice.lock") == "version: 1\nstages: [unclosed\n"


def test_plugin_state_is_kept_only_when_the_stage_succeeds(ws: Workspace) -> None:
    # util.copy writes nothing to state; a failing copy must leave an existing state untouched.
    ws.write("pipeline.yaml", "version: 1\nstages:\n  c:\n    uses: util.copy\n    inputs: {a: a.txt}\n    outputs: {a: b.txt}\n")
    ws.write("a.txt", "1\n")
    state = ws.root / ".sluice/state/c"
    state.mkdir(parents=True)
    (state / "accepted.json").write_text('{"accuracy": 0.9}\n')
    assert ws.run_json() == {"c": "ran"}
    assert (state / "accepted.json").read_text() == '{"accuracy": 0.9}\n'  # carried over to the new state
    (ws.root / "a.txt").unlink()
    (ws.root / "a.txt").mkdir()  # copying a directory onto the file output path now fails mid-way
    (ws.root / "a.txt" / "x").write_text("x")
    ws.write(
        "pipeline.yaml",
        "version: 1\nstages:\n  c:\n    uses: util.copy\n    with: {pairs: {a: nope}}\n    inputs: {a: a.txt}\n    outputs: {a: b.txt}\n",
    )
    assert ws.run_json() == {"c": "failed"}
    assert (state / "accepted.json").read_text() == '{"accuracy": 0.9}\n'


def _latest_run(ws: Workspace) -> dict:
    import json

    return json.loads(ws.read(".sluice/runs/latest.json"))


def test_ctrl_c_with_output_piped_exits_130_and_records_the_run(ws: Workspace) -> None:
    ws.write("pipeline.yaml", SLOW)
    engine = subprocess.Popen(
        [sys.executable, "-m", "sluice", "run", "--jobs", "2"],
        cwd=ws.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
    )
    # `sluice run | cat` at a terminal: Ctrl-C reaches the whole pipeline, so cat is gone too.
    cat = subprocess.Popen(["cat"], stdin=engine.stdout, stdout=subprocess.DEVNULL, process_group=engine.pid)
    assert engine.stdout is not None
    engine.stdout.close()
    _wait_for(ws.root / "started")
    time.sleep(0.3)
    os.killpg(engine.pid, signal.SIGINT)
    _, err = engine.communicate(timeout=30)
    cat.wait(timeout=10)
    assert engine.returncode == 130, err
    assert b"Traceback" not in err
    record = _latest_run(ws)
    assert record["interrupted"] is True and record["stages"]["slow"]["outcome"] == "not-run"
    assert "quick:" in ws.read("sluice.lock")


def test_stage_ignoring_sigterm_is_told_about_before_sigkill(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  slow:\n    cmd: trap '' TERM; touch started; sleep 60\n    outputs: {o: o.txt}\n")
    proc = _start(ws)
    _wait_for(ws.root / "started")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    message = "sluice: stage slow ignored SIGTERM; killing it after 5 s"
    assert message in out + err
    logs = list((ws.root / ".sluice/logs").rglob("slow.log"))
    assert message in logs[0].read_text()


APPENDING = """\
version: 1
params: {t: 6}
stages:
  app:
    cmd: echo $$ > app.pid; echo x >> out.txt; touch started; sleep ${params.t}; echo y >> out.txt
    outputs: {o: out.txt}
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == b"Z"  # dead; a container's init may never reap it


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _watchdog_of(ws: Workspace) -> int:
    """The watchdog of the run now in progress (it names its run in its environment)."""
    journals = list((ws.root / ".sluice/running").glob("*.jsonl"))
    assert len(journals) == 1
    want = f"SLUICE_WATCHDOG={journals[0].stem}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and want in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    raise AssertionError("no watchdog is running")


def _start_appending(ws: Workspace) -> tuple[subprocess.Popen[str], int, float]:
    ws.write("pipeline.yaml", APPENDING)
    proc = _start(ws)
    _wait_for(ws.root / "started")
    return proc, int(ws.read("app.pid")), time.monotonic()


def _rerun_records_only_its_own_content(ws: Workspace, started: float) -> None:
    res = ws.sluice("run", "--json", "--set", "t=0")
    assert res.code == 0, res.err
    time.sleep(max(0.0, started + 7 - time.monotonic()))  # past when the first copy, had it lived, would append "y"
    assert ws.read("out.txt") == "x\ny\n"
    status = ws.sluice("status", "--set", "t=0")
    assert "Everything is up to date" in status.out, status.out


@pytest.mark.parametrize("target", ["engine alone", "engine's process group"])
def test_kill_9_of_the_engine_kills_its_stage(ws: Workspace, target: str) -> None:
    proc, stage, started = _start_appending(ws)
    if target == "engine alone":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _wait_gone(stage, 3), f"the stage outlived the {target}"
    _rerun_records_only_its_own_content(ws, started)


def test_next_run_stops_a_dead_runs_stage_when_the_watchdog_died_too(ws: Workspace) -> None:
    proc, stage, started = _start_appending(ws)
    os.kill(_watchdog_of(ws), signal.SIGKILL)  # as an OOM killer or a container stop might
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert not _gone(stage)  # nothing stopped it yet
    res = ws.sluice("run", "--set", "t=0")
    assert res.code == 0, res.err
    assert f"was still running (pid {stage}" in res.out and "stopping it first" in res.out
    assert _gone(stage)
    time.sleep(max(0.0, started + 7 - time.monotonic()))
    assert ws.read("out.txt") == "x\ny\n"
    assert not list((ws.root / ".sluice/running").glob("*.jsonl"))


@pytest.mark.parametrize("same_again", [True, False])
def test_a_failed_restore_upstream_of_restores_already_under_way_leaves_consistent_outputs(ws: Workspace, same_again: bool) -> None:
    """Planned restores start at once, before their upstream stages are done. When one of those upstream
    restores fails (a corrupt object) and its stage runs instead, every stage below it is decided again:
    restored when the new output is the old one, run when it differs; never left with the early copy."""
    s1 = "echo same > ${outputs.o}" if same_again else "od -An -N16 -tx1 /dev/urandom > ${outputs.o}"
    stage = "  {0}:\n    cmd: {1}\n    inputs: {{i: '${{stages.{2}.outputs.o}}'}}\n    outputs: {{o: out/{0}.txt}}\n"
    ws.write(
        "pipeline.yaml",
        "version: 1\nstages:\n  s0:\n    cmd: echo zero > ${outputs.o}\n    outputs: {o: out/s0.txt}\n"
        + stage.format("s1", f"cat ${{inputs.i}} > /dev/null; {s1}", "s0")
        + stage.format("s2", "(cat ${inputs.i}; echo two) > ${outputs.o}", "s1")
        + stage.format("s3", "(cat ${inputs.i}; echo three) > ${outputs.o}", "s2"),
    )
    assert ws.run_json() == dict.fromkeys(("s0", "s1", "s2", "s3"), "ran")
    from sluice.engine.fingerprint import hash_file

    victim = hash_file(ws.root / "out/s1.txt")
    for name in ("s0", "s1", "s2", "s3"):
        (ws.root / f"out/{name}.txt").unlink()
    (obj,) = [o for o in _objects(ws) if o.name == victim[2:]]
    os.chmod(obj, 0o644)
    obj.write_text("garbage\n")
    below = "restored" if same_again else "ran"
    assert ws.run_json("-j", "1") == {"s0": "restored", "s1": "ran", "s2": below, "s3": below}
    assert ws.read("out/s2.txt") == ws.read("out/s1.txt") + "two\n"
    assert ws.read("out/s3.txt") == ws.read("out/s2.txt") + "three\n"
    assert ws.run_json() == dict.fromkeys(("s0", "s1", "s2", "s3"), "skipped")
