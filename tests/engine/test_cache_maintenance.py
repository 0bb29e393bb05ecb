"""Durability and cache upkeep: crash leftovers, truncated objects, full or read-only caches, verify, gc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sluice.engine import durable
from tests.conftest import Result, Workspace

ONE = "version: 1\nparams: {n: 1}\nstages:\n  s:\n    cmd: echo n=${params.n} > ${outputs.o}\n    outputs: {o: out.txt}\n"


def _objects(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "objects").rglob("*") if p.is_file())


def _dead_pid() -> int:
    return 4_000_000  # above Linux's pid_max: never a live process


# ---- item 18: crash leftovers and torn writes


def test_leftovers_of_a_killed_run_are_cleaned_and_the_run_succeeds(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    assert ws.run_json() == {"s": "ran"}
    cache = ws.root / ".sluice/cache"
    host = os.uname().nodename
    partial_dead = cache / "tmp" / f"abc+{host}+{_dead_pid()}+0123456789ab.tmp"
    partial_old = cache / "tmp" / "12345-67890"  # an older Sluice's temp name, hours old
    partial_live = cache / "tmp" / durable.temp_name("live")  # this process: a writer in progress
    for p in (partial_dead, partial_old, partial_live):
        p.write_bytes(b"half an obj")
    old = time.time() - 2 * durable.GRACE_SECONDS
    os.utime(partial_old, (old, old))
    staging = ws.root / ".sluice/tmp/20240101-000000-999/s"
    staging.mkdir(parents=True)
    (staging / "out.txt").write_text("partial\n")
    os.chmod(staging / "out.txt", 0o444)
    lock_tmp = ws.root / f".sluice.lock.{_dead_pid()}.tmp"  # a lock write cut short by a full disk
    lock_tmp.write_text("version: 1\nsta")
    runs_tmp = ws.root / ".sluice/runs" / f".latest.json+{host}+{_dead_pid()}+00ff00ff00ff.tmp"
    runs_tmp.write_text("{")

    assert ws.run_json("--set", "n=2") == {"s": "ran"}
    assert ws.read("out.txt") == "n=2\n"
    for gone in (partial_dead, partial_old, staging.parent, lock_tmp, runs_tmp):
        assert not gone.exists(), gone
    assert partial_live.exists()  # its writer is alive: a shared cache's other user may be mid-write


def test_truncated_object_is_detected_on_restore_and_the_stage_runs(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.run_json()
    ws.run_json("--set", "n=2")
    cache = ws.root / ".sluice/cache"
    for obj in _objects(cache):  # a crash after a partial write: present, but short
        os.chmod(obj, 0o644)
        with open(obj, "r+b") as f:
            f.truncate(2)
    res = ws.sluice("run", "--json")
    assert res.code == 0, res.err
    assert res.json()["stages"]["s"]["outcome"] == "ran"
    assert ws.read("out.txt") == "n=1\n"
    # the short object was replaced by a whole one: the next change-back restores
    ws.run_json("--set", "n=2")
    assert ws.run_json() == {"s": "restored"}


def test_a_short_object_is_replaced_when_the_same_content_is_stored_again(tmp_path: Path) -> None:
    from sluice.engine.cache import RunEntry, Store
    from sluice.engine.fingerprint import Digest, hash_bytes

    store = Store(tmp_path / "cache")
    (tmp_path / "out").write_bytes(b"hello world\n")
    digest = Digest("file", hash_bytes(b"hello world\n"), 12)
    store.record(tmp_path, RunEntry("f" * 64, "s", {"o": ("out", digest)}, time.time()))
    store.flusher.settle()
    (obj,) = _objects(tmp_path / "cache")
    os.chmod(obj, 0o644)
    obj.write_bytes(b"hel")
    store.record(tmp_path, RunEntry("e" * 64, "s", {"o": ("out", digest)}, time.time()))
    assert store.has(digest)  # waits for this process's own pending write
    assert obj.read_bytes() == b"hello world\n"


def test_temp_names_are_unique_across_threads() -> None:
    names: list[str] = []

    def pick() -> None:
        names.extend(durable.temp_name("x") for _ in range(200))

    threads = [threading.Thread(target=pick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == len(names) == 1600
    assert durable.writer_alive(names[0]) is True


def test_atomic_write_leaves_no_temp_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "sluice.lock"
    target.write_text("old\n")

    class Boom(Exception):
        pass

    try:
        with durable.atomic_file(target) as f:
            f.write(b"half")
            raise Boom
    except Boom:
        pass
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sluice.lock"]


# ---- item 11 (cache part): a full or read-only cache


BIG = """\
version: 1
stages:
  s:
    cmd: head -c 200000 /dev/zero > ${outputs.o}
    outputs: {o: big.bin}
"""


@contextmanager
def _mounted(*argv: str) -> Iterator[None]:
    """Run `mount argv…`; skip the test where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    if subprocess.run(["mount", *argv], capture_output=True, check=False).returncode != 0:
        pytest.skip("mount not permitted here")
    try:
        yield
    finally:
        subprocess.run(["umount", argv[-1]], check=False)


def _assert_cache_failure_is_a_warning(ws: Workspace, res: Result, why: str) -> None:
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    assert "warning: stage 's' ran, but could not write to the cache" in res.err and why in res.err, res.err
    assert res.json()["stages"]["s"]["outcome"] == "ran"
    assert (ws.root / "big.bin").stat().st_size == 200000  # the stage did succeed: its output stays
    assert "big.bin" in ws.read("sluice.lock")
    assert ws.run_json("--cache-dir", "cache") == {"s": "skipped"}  # and is recorded as up to date


def test_full_cache_disk_warns_and_keeps_the_outputs(ws: Workspace) -> None:
    ws.write("pipeline.yaml", BIG)
    cache = ws.root / "cache"
    cache.mkdir()
    with _mounted("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(cache)):
        res = ws.sluice("run", "--json", "--cache-dir", "cache")
        _assert_cache_failure_is_a_warning(ws, res, "No space left on device")
        assert list((cache / "tmp").iterdir()) == []  # the partial object went with the failure


def test_read_only_cache_warns_and_keeps_the_outputs(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    ws.write("pipeline.yaml", BIG)
    cache = ws.root / "cache"
    cache.mkdir()
    with _mounted("--bind", "-o", "ro", str(tmp_path_factory.mktemp("ro")), str(cache)):
        if os.access(cache, os.W_OK) and subprocess.run(["touch", str(cache / "probe")], check=False).returncode == 0:
            pytest.skip("this kernel ignores ro on a bind mount")
        res = ws.sluice("run", "--json", "--cache-dir", "cache")
        _assert_cache_failure_is_a_warning(ws, res, "Read-only file system")


def test_unwritable_cache_folder_warns_and_keeps_the_outputs(ws: Workspace) -> None:
    ws.write("pipeline.yaml", BIG)
    (ws.root / "cache").mkdir()
    (ws.root / "cache/objects").write_text("not a folder\n")  # mkdir under it fails, even for root
    res = ws.sluice("run", "--json", "--cache-dir", "cache")
    _assert_cache_failure_is_a_warning(ws, res, "cache/objects")


# ---- item 19: sluice cache verify, sluice gc


def _age(path: Path, days: float) -> None:
    """Make a cache file look `days` old; a run entry also records its own creation time."""
    when = time.time() - days * 86400
    if path.suffix == ".json" and "runs" in path.parts:
        data = json.loads(path.read_bytes())
        data["created"] = when
        os.chmod(path, 0o644)
        path.write_text(json.dumps(data))
    os.utime(path, (when, when))


def _age_cache(cache: Path, days: float) -> None:
    for p in cache.rglob("*"):
        if p.is_file():
            _age(p, days)


def test_cache_verify_lists_and_quarantines_bad_objects(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.run_json()
    ws.run_json("--set", "n=2")
    cache = ws.root / ".sluice/cache"
    res = ws.sluice("cache", "verify")
    assert res.code == 0, res.err
    assert "2 objects checked" in res.out and "0 bad" in res.out
    victim = _objects(cache)[0]
    os.chmod(victim, 0o644)
    victim.write_text("garbage\n")
    res = ws.sluice("cache", "verify", "--json")
    assert res.code == 1, res.err
    report = res.json()
    assert report["objects"] == 2 and report["ok"] is False
    bad = [b for b in report["bad"] if b["expected"]]
    assert len(bad) == 1 and bad[0]["path"] == str(victim)
    assert bad[0]["expected"] == victim.parent.name + victim.name
    assert bad[0]["actual"] == hashlib_blake3(b"garbage\n")
    assert not victim.exists() and (cache / "quarantine/objects" / victim.parent.name / victim.name).exists()
    # the run entry that named it is retired too: it could never be restored
    assert any("missing object" in b["problem"] for b in report["bad"])
    assert ws.sluice("cache", "verify").code == 0  # what is left is sound
    res = ws.sluice("gc")
    assert "removed 1 object and 1 run entry" in res.out, res.out  # gc empties the quarantine
    assert not any(p.is_file() for p in (cache / "quarantine").rglob("*"))


def test_cache_verify_finds_unreadable_run_entries_and_delete_removes(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.run_json()
    cache = ws.root / ".sluice/cache"
    (entry,) = (cache / "runs").rglob("*.json")
    os.chmod(entry, 0o644)
    entry.write_text('{"fingerprint": "x", "outp')
    res = ws.sluice("cache", "verify", "--delete")
    assert res.code == 1
    assert f"{entry}: not a readable run entry" in res.out
    assert "1 bad" in res.out and "deleted" in res.out
    assert not entry.exists() and not (cache / "quarantine").exists()


def hashlib_blake3(data: bytes) -> str:
    from sluice.engine.fingerprint import hash_bytes

    return hash_bytes(data)


GC = """\
version: 1
params: {n: 1}
stages:
  s:
    cmd: echo n=${params.n} > ${outputs.o}
    outputs: {o: out.txt}
  d:
    cmd: mkdir -p ${outputs.o} && echo ${params.n} > ${outputs.o}/a && echo same > ${outputs.o}/b
    outputs: {o: folder}
"""


def test_gc_keeps_what_the_lock_names_and_drops_old_unreferenced(ws: Workspace) -> None:
    ws.write("pipeline.yaml", GC)
    ws.run_json("--set", "n=2")
    ws.run_json()  # the lock now names n=1's outputs; n=2's are only in old run entries
    cache = ws.root / ".sluice/cache"
    _age_cache(cache, 30)
    before = {p.name for p in _objects(cache)}
    assert len(before) == 5  # out.txt ×2, folder/a ×2, folder/b once
    res = ws.sluice("gc", "--dry-run")
    assert res.code == 0, res.err
    assert "would remove 2 objects and 2 run entries" in res.out, res.out
    assert {p.name for p in _objects(cache)} == before  # a dry run removes nothing
    res = ws.sluice("gc", "--json")
    assert res.code == 0, res.err
    report = res.json()
    assert (report["removed_objects"], report["removed_entries"]) == (2, 2)
    assert report["bytes_freed"] > 0
    assert len(_objects(cache)) == 3
    assert ws.sluice("cache", "verify").code == 0  # nothing left names a removed object
    # what the lock names still restores
    (ws.root / "out.txt").unlink()
    shutil.rmtree(ws.root / "folder")
    assert ws.run_json() == {"s": "restored", "d": "restored"}
    # and the dropped outputs are really gone: n=2 runs again
    assert ws.run_json("--set", "n=2") == {"s": "ran", "d": "ran"}


def test_gc_keeps_recent_run_entries_and_young_objects(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.run_json("--set", "n=2")
    ws.run_json()
    cache = ws.root / ".sluice/cache"
    res = ws.sluice("gc")  # everything is minutes old: within --keep-days, and objects within the grace period
    assert res.code == 0, res.err
    assert "removed 0 objects and 0 run entries" in res.out
    entries = sorted((cache / "runs").rglob("*.json"))
    assert len(entries) == 2
    # an unreferenced entry older than --keep-days goes, but its object was touched minutes ago: it stays
    n2 = next(e for e in entries if json.loads(e.read_text())["outputs"]["o"]["hash"] != _lock_hash(ws))
    _age(n2, 10)
    assert ws.sluice("gc", "--keep-days", "3").code == 0
    assert not n2.exists()
    assert len(_objects(cache)) == 2  # the object is within the grace period
    for obj in _objects(cache):
        _age(obj, 10)
    assert ws.sluice("gc", "--keep-days", "3").code == 0
    assert len(_objects(cache)) == 1


def _lock_hash(ws: Workspace) -> str:
    import yaml

    lock = yaml.safe_load(ws.read("sluice.lock"))
    stages = lock.get("stages") or next(iter(lock["pipelines"].values()))["stages"]
    return stages["s"]["outputs"]["o"]["hash"]


def test_gc_respects_every_pipeline_files_lock_entries(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.write("other.yaml", ONE.replace("out.txt", "other.txt").replace("{n: 1}", "{n: 7}"))
    ws.run_json()
    assert ws.run_json("-f", "other.yaml") == {"s": "ran"}
    cache = ws.root / ".sluice/cache"
    _age_cache(cache, 30)
    res = ws.sluice("gc", "--keep-days", "1")
    assert res.code == 0, res.err
    assert "removed 0 objects" in res.out
    (ws.root / "other.txt").unlink()
    assert ws.run_json("-f", "other.yaml") == {"s": "restored"}


def test_gc_with_an_unreadable_lock_refuses_and_removes_nothing(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    ws.run_json()
    cache = ws.root / ".sluice/cache"
    _age_cache(cache, 30)
    (ws.root / "sluice.lock").write_text("version: 1\nstages: [\n")
    res = ws.sluice("gc")
    assert res.code == 2 and "sluice.lock" in res.err and "Traceback" not in res.err
    assert len(_objects(cache)) == 1


def test_gc_and_verify_flags(ws: Workspace) -> None:
    ws.write("pipeline.yaml", ONE)
    assert ws.sluice("gc", "--keep-days", "-1").code == 2
    res = ws.sluice("gc", "-f", "nope.yaml")
    assert res.code == 2 and "nope.yaml: file not found" in res.err
    ws.run_json("--cache-dir", "elsewhere")
    res = ws.sluice("cache", "verify", "--cache-dir", "elsewhere")
    assert res.code == 0 and "1 object checked" in res.out


def test_gc_refuses_while_a_run_holds_the_workspace(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml", "version: 1\nstages:\n  slow:\n    cmd: touch started; sleep 60; echo > ${outputs.o}\n    outputs: {o: o.txt}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "run"], cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(300):
            if (ws.root / "started").exists():
                break
            time.sleep(0.05)
        res = ws.sluice("gc")
        assert res.code == 3, res.err
        assert ws.sluice("gc", "--dry-run").code == 0  # only reads: no lock needed
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_gc_reads_a_version_1_lock(ws: Workspace) -> None:
    import yaml

    ws.write("pipeline.yaml", ONE)
    ws.run_json()
    lock = yaml.safe_load(ws.read("sluice.lock"))
    stages = lock["pipelines"]["pipeline.yaml"]["stages"] if "pipelines" in lock else lock["stages"]
    (ws.root / "sluice.lock").write_text(yaml.safe_dump({"version": 1, "hash": "blake3", "stages": stages}))
    cache = ws.root / ".sluice/cache"
    _age_cache(cache, 30)
    res = ws.sluice("gc", "--keep-days", "1")
    assert res.code == 0, res.err
    assert "removed 0 objects and 0 run entries" in res.out
