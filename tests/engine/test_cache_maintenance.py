"""Durability and cache upkeep: crash leftovers, truncated objects, full or read-only caches, verify, gc."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import durable
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
    from engine.cache import RunEntry, Store
    from engine.fingerprint import Digest, hash_bytes

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
    if subprocess.run(["mount", *argv], capture_output=True).returncode != 0:
        pytest.skip("mount not permitted here")
    try:
        yield
    finally:
        subprocess.run(["umount", argv[-1]], check=False)


def _assert_cache_failure_is_a_warning(ws: Workspace, res: Result, why: str) -> None:
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    assert f"warning: stage 's' ran, but could not write to the cache" in res.err and why in res.err, res.err
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
        if os.access(cache, os.W_OK) and subprocess.run(["touch", str(cache / "probe")]).returncode == 0:
            pytest.skip("this kernel ignores ro on a bind mount")
        res = ws.sluice("run", "--json", "--cache-dir", "cache")
        _assert_cache_failure_is_a_warning(ws, res, "Read-only file system")


def test_unwritable_cache_folder_warns_and_keeps_the_outputs(ws: Workspace) -> None:
    ws.write("pipeline.yaml", BIG)
    (ws.root / "cache").mkdir()
    (ws.root / "cache/objects").write_text("not a folder\n")  # mkdir under it fails, even for root
    res = ws.sluice("run", "--json", "--cache-dir", "cache")
    _assert_cache_failure_is_a_warning(ws, res, "cache/objects")
