"""The recorded state tells the truth: a hostile or damaged lock, two pipelines in one folder,
refused and read-only commands, dead engines and full disks never leave a lie behind."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.engine import api
from sluice.engine.errors import SluiceError
from tests.conftest import Workspace

ONE = "version: 1\nstages:\n  s:\n    cmd: echo made > ${outputs.o}\n    outputs: {o: out.txt}\n"


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nversion: 1\nstages:\n  s: {{fingerprint: x, params: {{p: *a{levels - 1}}}}}\n"


# ---- item 9: the lock is untrusted input, read with the spec's guarded loader


def test_alias_bomb_in_the_lock_is_a_clean_error_fast(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("sluice.lock", _bomb())
    t0 = time.monotonic()
    res = ws.sluice("status", timeout=60)
    assert time.monotonic() - t0 < 20
    assert res.code == 2, res.err
    assert "sluice.lock:" in res.err and "alias bomb" in res.err and "Traceback" not in res.err
    (ws.root / ".sluice").mkdir()  # where a run would cache the parsed lock
    res = ws.sluice("run", timeout=60)
    assert res.code == 2 and "alias bomb" in res.err


def test_non_utf8_lock_names_the_file(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    (ws.root / "sluice.lock").write_bytes(b"version: 1\nstages:\n  s: {fingerprint: \xff\xfe}\n")
    for cmd in ("status", "run"):
        res = ws.sluice(cmd)
        assert res.code == 2, res.err
        assert "sluice.lock" in res.err and "UTF-8" in res.err and "Traceback" not in res.err
    assert (ws.root / "sluice.lock").read_bytes().endswith(b"\xff\xfe}\n")  # left as it was


def test_lock_over_the_size_limit_is_refused_before_reading(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("sluice.lock", "version: 1\nstages: {}\n" + "#" * 5000 + "\n")
    res = ws.sluice("status", env={"SLUICE_MAX_LOCK_BYTES": "1000"})
    assert res.code == 2, res.err
    assert "sluice.lock" in res.err and "SLUICE_MAX_LOCK_BYTES" in res.err


def test_tags_and_duplicate_keys_in_the_lock_are_refused(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("sluice.lock", "version: 1\nstages:\n  s: !!python/object:os.system {}\n")
    res = ws.sluice("status")
    assert res.code == 2 and "sluice.lock:3:" in res.err and "not allowed" in res.err
    ws.write("sluice.lock", "version: 1\nstages: {}\nstages: {}\n")
    res = ws.sluice("status")
    assert res.code == 2 and "duplicate key 'stages'" in res.err


@pytest.mark.parametrize(
    "entry",
    [
        "5",
        "[1, 2]",
        "{fingerprint: 3}",
        "{fingerprint: abc, inputs: [1]}",
        "{fingerprint: abc, inputs: {i: 7}}",
        "{fingerprint: abc, params: [a]}",
        "{fingerprint: abc, outputs: {o: 7}}",
        "{fingerprint: abc, outputs: {o: {path: out.txt, hash: 12}}}",
        "{fingerprint: abc, outputs: []}",
    ],
)
def test_malformed_entry_is_no_record_for_that_stage(ws: Workspace, entry: str) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("sluice.lock", f"version: 1\nhash: blake3\nstages:\n  s: {entry}\n")
    res = ws.sluice("status", "--json")
    assert res.code == 0, res.err
    assert res.json()["stages"]["s"]["reasons"] == ["never run"]
    assert ws.run_json() == {"s": "ran"}
    assert ws.run_json() == {"s": "skipped"}


@pytest.mark.parametrize("body", ["[]", "version: 1\nstages: [a]\n", "version: one\n", "version: 1\nhash: [x]\nstages: {}\n"])
def test_malformed_lock_shape_is_a_clean_error(ws: Workspace, body: str) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("sluice.lock", body)
    res = ws.sluice("status")
    assert res.code == 2 and "sluice.lock" in res.err and "Traceback" not in res.err


_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False))
_junk = st.recursive(
    _scalar, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=12
)
_entry_keys = st.sampled_from(["fingerprint", "inputs", "outputs", "params", "matrix", "cmd", "path", "hash", "s", "o"])
_entry = st.recursive(_scalar, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_entry_keys, kids, max_size=4), max_leaves=16)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    top=st.dictionaries(st.sampled_from(["version", "hash", "stages", "pipelines", "v1"]), _junk, max_size=3),
    stages=st.dictionaries(st.sampled_from(["s", "t"]), _entry, max_size=2),
    version=st.sampled_from([1, 2, 3, "1", None]),
)
def test_junk_locks_never_raise_a_traceback(tmp_path: Path, top: dict, stages: dict, version: object) -> None:
    (tmp_path / "pipeline.yaml").write_text(ONE)
    for body in (
        top,
        {"version": version, "hash": "blake3", "stages": stages},
        {"version": version, "pipelines": {"pipeline.yaml": {"stages": stages}}, "v1": {"stages": stages}},
    ):
        (tmp_path / "sluice.lock").write_text(yaml.safe_dump(body))
        loaded = api.load(tmp_path / "pipeline.yaml")
        with contextlib.suppress(SluiceError):
            api.status(loaded)


# ---- item 16: each pipeline file in a folder has its own section of sluice.lock

TRAIN = "version: 1\nstages:\n  train:\n    cmd: echo model > ${outputs.m}\n    outputs: {m: model.txt}\n"
DEPLOY = (
    "version: 1\nstages:\n  deploy:\n    cmd: cat ${inputs.m} > ${outputs.d}\n    inputs: {m: model.txt}\n    outputs: {d: deployed.txt}\n"
)


def _up_to_date(ws: Workspace, file: str) -> bool:
    res = ws.sluice("status", "-f", file, "--json")
    assert res.code == 0, res.err
    return not any(s["stale"] for s in res.json()["stages"].values())


def test_two_pipelines_in_one_folder_keep_their_entries(ws: Workspace) -> None:
    ws.write("pipeline.yaml", TRAIN)
    ws.write("deploy.yaml", DEPLOY)
    assert ws.run_json("-f", "pipeline.yaml") == {"train": "ran"}
    assert ws.run_json("-f", "deploy.yaml") == {"deploy": "ran"}
    assert _up_to_date(ws, "pipeline.yaml") and _up_to_date(ws, "deploy.yaml")
    assert ws.run_json("-f", "pipeline.yaml") == {"train": "skipped"}
    assert ws.run_json("-f", "deploy.yaml") == {"deploy": "skipped"}
    lock = yaml.safe_load(ws.read("sluice.lock"))
    assert lock["version"] == 2 and set(lock["pipelines"]) == {"pipeline.yaml", "deploy.yaml"}
    assert set(lock["pipelines"]["deploy.yaml"]["stages"]) == {"deploy"}


def test_version_1_lock_is_claimed_by_stage_id(ws: Workspace) -> None:
    ws.write("pipeline.yaml", TRAIN)
    ws.write("deploy.yaml", DEPLOY)
    ws.run_json("-f", "pipeline.yaml")
    ws.run_json("-f", "deploy.yaml")
    v2 = yaml.safe_load(ws.read("sluice.lock"))
    merged = {**v2["pipelines"]["pipeline.yaml"]["stages"], **v2["pipelines"]["deploy.yaml"]["stages"]}
    ws.write("sluice.lock", yaml.safe_dump({"version": 1, "hash": "blake3", "stages": merged}))
    before = ws.read("sluice.lock")
    assert _up_to_date(ws, "pipeline.yaml") and _up_to_date(ws, "deploy.yaml")
    assert ws.read("sluice.lock") == before  # status only reads
    assert ws.run_json("-f", "pipeline.yaml") == {"train": "skipped"}
    lock = yaml.safe_load(ws.read("sluice.lock"))
    assert set(lock["pipelines"]) == {"pipeline.yaml"} and set(lock["v1"]["stages"]) == {"deploy"}
    assert _up_to_date(ws, "deploy.yaml")
    assert ws.run_json("-f", "deploy.yaml") == {"deploy": "skipped"}
    lock = yaml.safe_load(ws.read("sluice.lock"))
    assert set(lock["pipelines"]) == {"pipeline.yaml", "deploy.yaml"} and "v1" not in lock


def test_lock_from_a_newer_sluice_says_so(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("sluice.lock", "version: 3\npipelines: {}\n")
    res = ws.sluice("run")
    assert res.code == 2
    assert "sluice.lock: written by a newer Sluice (lock version 3); upgrade Sluice" in res.err


# ---- item 17: a refused run changes nothing; status and --dry-run only read

TWO = """\
version: 1
stages:
  a:
    cmd: cat ${inputs.i} > ${outputs.o}
    inputs: {i: in.txt}
    outputs: {o: a.txt}
  b:
    cmd: cat ${inputs.a} > ${outputs.o}
    inputs: {a: "${stages.a.outputs.o}"}
    outputs: {o: b.txt}
"""


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the workspace with its bytes and mtime: what "nothing written" means."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _ran_once(ws: Workspace) -> None:
    ws.write("pipeline.yaml", TWO)
    ws.write("in.txt", "1\n")
    assert ws.run_json() == {"a": "ran", "b": "ran"}


def test_status_and_dry_run_write_nothing(ws: Workspace) -> None:
    _ran_once(ws)
    ws.write("in.txt", "2\n")  # a fresh hash to remember, if status were to save it
    lock = ws.read("sluice.lock")
    ws.write("sluice.lock", lock.replace("# Written by", "# Edited by hand; written by"))  # the JSON shadow is now stale
    before = _tree(ws.root)
    for args in (("status",), ("status", "--json"), ("run", "--dry-run"), ("dag", "--status")):
        res = ws.sluice(*args)
        assert res.code == 0, res.err
        assert _tree(ws.root) == before, args
    assert "a: will run: input in.txt changed" in ws.sluice("status").out


def test_status_works_when_sluice_folder_cannot_be_written(ws: Workspace) -> None:
    _ran_once(ws)
    ws.write("in.txt", "2\n")
    (ws.root / "sluice.lock").write_text(ws.read("sluice.lock") + "\n")  # stale shadow
    meta = ws.root / ".sluice"
    meta.rename(ws.root / "meta-aside")
    meta.write_text("not a folder: every write under .sluice/ fails\n")
    res = ws.sluice("status")
    assert res.code == 0, res.err
    assert "a: will run: input in.txt changed" in res.out


def _holder(ws: Workspace) -> bytes:
    return (ws.root / ".sluice/run.lock").read_bytes()


@pytest.mark.parametrize(
    "breakage",
    ["bad spec", "missing input", "unknown stage", "preflight"],
)
def test_refused_run_changes_nothing(ws: Workspace, breakage: str) -> None:
    _ran_once(ws)
    args: tuple[str, ...] = ()
    if breakage == "bad spec":
        ws.write("pipeline.yaml", TWO.replace("outputs: {o: b.txt}", "outputs: {o: a.txt}"))
    elif breakage == "missing input":
        ws.write("in.txt", "2\n")
        ws.write(
            "pipeline.yaml", TWO + "  c:\n    cmd: cat ${inputs.i} > ${outputs.o}\n    inputs: {i: nope.txt}\n    outputs: {o: c.txt}\n"
        )
    elif breakage == "unknown stage":
        args = ("nope",)
    else:
        ws.write("train.csv", "x,y\n1,0\n2,1\n")
        ws.write(
            "pipeline.yaml",
            TWO
            + (
                "  t:\n    uses: sklearn.train\n"
                "    with: {estimator: sklearn.linear_model.LogisticRegression, params: {Cc: 1}, target: y}\n"
                "    inputs: {train: train.csv}\n    outputs: {model: model}\n"
            ),
        )
    before = _tree(ws.root)
    res = ws.sluice("run", *args)
    assert res.code == 2, res.out + res.err
    assert _tree(ws.root) == before


def test_busy_workspace_refusal_names_the_holder_and_changes_nothing(ws: Workspace) -> None:
    import fcntl
    import json
    import os

    _ran_once(ws)
    path = ws.root / ".sluice/run.lock"
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        started = time.time() - 1
        os.pwrite(fd, json.dumps({"run_id": "20261201-234102-123", "started": started, "pid": 123}).encode(), 0)
        before = _tree(ws.root)
        res = ws.sluice("run")
        assert res.code == 3
        shown = time.strftime("%H:%M:%S", time.localtime(started))
        assert f"another sluice run (run 20261201-234102-123, started {shown}, pid 123) is using" in res.err
        assert _tree(ws.root) == before
    finally:
        os.close(fd)


# ---- item 11 (the records): a full disk or a read-only state folder is a message, not a traceback


def _run_with_file_size_limit(ws: Workspace, limit: int) -> tuple[int, str]:
    """`sluice run` whose writes past `limit` bytes fail (EFBIG), as writes on a full disk fail (ENOSPC)."""
    import resource
    import subprocess
    import sys

    def limit_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "run"],
        cwd=ws.root,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_writes,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_lock_that_cannot_be_written_is_a_clean_error(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    code, out = _run_with_file_size_limit(ws, 300)  # the lock of one stage is some 700 bytes
    assert code == 1, out
    assert "sluice: cannot write sluice.lock: File too large" in out and "Traceback" not in out
    assert not (ws.root / "sluice.lock").exists()
    assert not [p for p in ws.root.iterdir() if p.name.endswith(".tmp")]  # no half-written temp file left
    assert ws.run_json() == {"s": "skipped"}  # the run cache had it; now it is recorded


def test_run_record_that_cannot_be_written_is_a_clean_error(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.run_json()
    runs = ws.root / ".sluice/runs"
    for p in runs.iterdir():
        p.unlink()
    runs.rmdir()
    runs.write_text("a file where the run records go\n")
    res = ws.sluice("run", "--force")
    assert res.code == 1, res.err
    assert "sluice: cannot write .sluice/runs/" in res.err and ".sluice/runs: File exists" in res.err
    assert "Traceback" not in res.err
