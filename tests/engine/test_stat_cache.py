"""The stat cache never hides an edit: ctime in the key, git's racy rule, --rehash, --force."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from sluice.engine import fingerprint
from sluice.engine.fingerprint import RACY_NS, HashCache, hash_bytes
from tests.conftest import Workspace

HOUR_NS = 3600 * 10**9


def _backdate(path: Path) -> None:
    """An old mtime, as after a checkout: only ctime (which no user can set) says "just now"."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_NS))


def _edit_keeping_size_and_mtime(path: Path, text: str) -> None:
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Seconds added to the clock the cache records its hashes by."""
    skew = [0]
    real = time.time_ns
    monkeypatch.setattr(fingerprint.time, "time_ns", lambda: real() + skew[0] * 10**9)
    return skew


def test_an_edit_that_keeps_size_and_mtime_is_seen_through_ctime(tmp_path: Path, clock: list[int]) -> None:
    f = tmp_path / "in.txt"
    f.write_text("one\n")
    _backdate(f)
    clock[0] = 10  # the hash is recorded well after every timestamp of the file: not racy
    cache = HashCache(tmp_path / "h.db", tmp_path)
    first = cache.file("in.txt")
    assert cache.file("in.txt") == first and cache.reads == 1  # trusted
    time.sleep(0.01)  # let ctime move on even on a coarse clock
    _edit_keeping_size_and_mtime(f, "two\n")
    assert cache.file("in.txt") == hash_bytes(b"two\n") and cache.reads == 2


def test_racy_rule_is_relative_to_when_the_hash_was_recorded(tmp_path: Path, clock: list[int]) -> None:
    f = tmp_path / "in.txt"
    f.write_text("one\n")
    _backdate(f)  # mtime an hour old, ctime now
    cache = HashCache(tmp_path / "h.db", tmp_path)
    cache.file("in.txt")  # recorded within RACY_NS of the file's ctime
    cache.save()
    clock[0] = 10  # however old the file is by now, that record stays unproven
    later = HashCache(tmp_path / "h.db", tmp_path)
    assert later.file("in.txt") == hash_bytes(b"one\n") and later.reads == 1
    assert later.file("in.txt") and later.reads == 1  # re-recorded 10 s after ctime: trusted now
    assert RACY_NS == 2_000_000_000


def test_rehash_distrusts_what_earlier_runs_recorded(tmp_path: Path, clock: list[int]) -> None:
    f = tmp_path / "in.txt"
    f.write_text("one\n")
    clock[0] = 10
    cache = HashCache(tmp_path / "h.db", tmp_path)
    cache.file("in.txt")
    cache.save()
    again = HashCache(tmp_path / "h.db", tmp_path, rehash=True)
    again.file("in.txt")
    again.file("in.txt")
    assert again.reads == 1  # read once in this process, then its own record serves


def test_an_old_cache_without_ctime_is_rebuilt(tmp_path: Path, clock: list[int]) -> None:
    f = tmp_path / "in.txt"
    f.write_text("one\n")
    st = f.stat()
    with sqlite3.connect(tmp_path / "h.db") as db:  # the schema before ctime was keyed on
        db.execute(
            "CREATE TABLE hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, digest TEXT, hashed_ns INTEGER)"
        )
        db.execute(
            "INSERT INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
            ("in.txt", st.st_size, st.st_mtime_ns, st.st_ino, "0" * 64, time.time_ns() + HOUR_NS),
        )
    db.close()
    clock[0] = 10
    cache = HashCache(tmp_path / "h.db", tmp_path)
    assert cache.file("in.txt") == hash_bytes(b"one\n") and cache.reads == 1
    cache.save()
    again = HashCache(tmp_path / "h.db", tmp_path)
    assert again.file("in.txt") == hash_bytes(b"one\n") and again.reads == 0


def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("one\n")
    (tmp_path / "h.db").write_bytes(b"not a database" * 100)
    cache = HashCache(tmp_path / "h.db", tmp_path)
    assert cache.file("in.txt") == hash_bytes(b"one\n")
    cache.save()
    assert HashCache(tmp_path / "h.db", tmp_path)._rows


# ---- through the CLI

PIPELINE = "version: 1\nstages:\n  a:\n    cmd: cat ${inputs.raw} > ${outputs.o}\n    inputs: {raw: in.txt}\n    outputs: {o: out.txt}\n"


def _lie_in_the_stat_cache(ws: Workspace, rel: str, digest: str) -> None:
    """Make the stat cache vouch for `digest` at the file's current stat (a filesystem whose
    timestamps cannot be trusted, say): only a re-read finds the truth."""
    st = (ws.root / rel).stat()
    with sqlite3.connect(ws.root / ".sluice" / "hashes.db") as db:
        db.execute(
            "UPDATE hashes SET size=?, mtime_ns=?, ctime_ns=?, inode=?, digest=?, hashed_ns=? WHERE path=?",
            (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest, time.time_ns() + HOUR_NS, rel),
        )
        assert db.total_changes == 1
    db.close()


def _lock_input_hash(ws: Workspace) -> str:
    """Stage a's recorded hash of its input, wherever the lock layout puts the stage."""
    import yaml

    todo = [yaml.safe_load(ws.read("sluice.lock"))]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("a"), dict) and "inputs" in node["a"]:
                return node["a"]["inputs"]["raw"]["hash"]
            todo.extend(node.values())
    raise AssertionError("no entry for stage a in sluice.lock")


def test_status_and_run_see_an_edit_that_keeps_size_and_mtime(ws: Workspace) -> None:
    ws.write("in.txt", "one\n")
    _backdate(ws.root / "in.txt")
    ws.write("pipeline.yaml", PIPELINE)
    assert ws.run_json() == {"a": "ran"}
    assert "a" not in ws.sluice("status").out or "up to date" in ws.sluice("status").out
    _edit_keeping_size_and_mtime(ws.root / "in.txt", "two\n")
    assert "input in.txt changed" in ws.sluice("status").out
    assert ws.run_json() == {"a": "ran"} and ws.read("out.txt") == "two\n"


def test_rehash_reads_every_file_again(ws: Workspace) -> None:
    ws.write("in.txt", "one\n")
    ws.write("pipeline.yaml", PIPELINE)
    assert ws.run_json() == {"a": "ran"}
    recorded = _lock_input_hash(ws)
    ws.write("in.txt", "two\n")
    _lie_in_the_stat_cache(ws, "in.txt", recorded)
    assert "input in.txt changed" not in ws.sluice("status").out  # the lie, believed
    assert "input in.txt changed" in ws.sluice("status", "--rehash").out
    assert ws.run_json("--rehash") == {"a": "ran"} and ws.read("out.txt") == "two\n"
    assert _lock_input_hash(ws) == hash_bytes(b"two\n")


def test_force_records_the_input_hashes_the_stage_read(ws: Workspace) -> None:
    ws.write("in.txt", "one\n")
    ws.write("pipeline.yaml", PIPELINE)
    assert ws.run_json() == {"a": "ran"}
    ws.write("in.txt", "two\n")
    _lie_in_the_stat_cache(ws, "in.txt", _lock_input_hash(ws))
    assert ws.run_json("--force") == {"a": "ran"} and ws.read("out.txt") == "two\n"
    assert _lock_input_hash(ws) == hash_bytes(b"two\n")
    assert ws.run_json() == {"a": "skipped"}


def test_an_input_edited_while_its_stage_runs_is_never_recorded(ws: Workspace) -> None:
    # The first time, the command rewrites its own input before reading it: the output then
    # comes from bytes the planner never hashed.
    cmd = "if [ ! -e ran-once ]; then touch ran-once; echo new > in.txt; fi; cat in.txt > ${outputs.o}"
    ws.write("in.txt", "old\n")
    ws.write("pipeline.yaml", PIPELINE.replace("cat ${inputs.raw} > ${outputs.o}", cmd))
    res = ws.sluice("run", "--json")
    stage = res.json()["stages"]["a"]
    assert res.code == 1 and stage["outcome"] == "failed"
    assert stage["error"] == "input in.txt changed while the stage ran; its result is not recorded (run again)"
    ws.write("in.txt", "old\n")  # back to the bytes the planner hashed
    assert ws.run_json() == {"a": "ran"} and ws.read("out.txt") == "old\n"
    assert ws.run_json() == {"a": "skipped"}
