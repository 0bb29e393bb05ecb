"""Restores (and stores) as reflinks where the filesystem clones, else copies; SLUICE_LINK chooses.

This machine's /tmp is ext4, which cannot clone: there the fallback and the detection are
tested. A loop-mounted btrfs image (root, mkfs.btrfs, a free loop device) gives the real thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.engine.cache import Link, RunEntry, Store, reflink
from sluice.engine.fingerprint import HashCache
from tests.conftest import Workspace

BIG = 8 << 20
PIPELINE = f"""\
version: 1
stages:
  make:
    cmd: head -c {BIG} /dev/urandom > ${{outputs.blob}}
    inputs: {{seed: seed.txt}}
    outputs: {{blob: out/blob.bin}}
"""


def _store_one(tmp: Path, links: tuple[Link, ...], size: int = 1 << 16) -> tuple[Store, RunEntry, Path]:
    ws = tmp / "ws"
    (ws / "out").mkdir(parents=True)
    (ws / "out/model.bin").write_bytes(os.urandom(size))
    digest = HashCache(tmp / "h.db", ws).digest("out/model.bin")
    store = Store(tmp / "store", links=links)
    store.put(ws / "out/model.bin", digest)
    store.flusher.settle()
    return store, RunEntry("f" * 64, "s", {"o": ("out/model.bin", digest)}, time.time()), ws


def _object(store: Store, entry: RunEntry) -> Path:
    return store.object_path(next(entry.objects()))


# ---- on this machine's own filesystem


def test_ext4_cannot_clone_and_the_copy_fallback_restores_verified(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 4096)
    with open(a, "rb") as src, open(b, "wb") as out:
        cloned = reflink(src, out)
    if cloned:
        pytest.skip(f"{tmp_path} can reflink: the fallback is not exercised here")
    store, entry, ws = _store_one(tmp_path, (Link.REFLINK, Link.COPY))
    (_, digest) = entry.outputs["o"]
    assert store.restore(digest, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == (ws / "out/model.bin").read_bytes()
    obj = _object(store, entry)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"evil")
    assert not store.restore(digest, tmp_path / "again.bin")  # verification stays: a bad object is refused
    assert not obj.exists()


def test_a_big_file_is_copied_by_the_kernel_and_every_byte_still_verified(tmp_path: Path) -> None:
    """From 8 MiB a copy is copy_file_range, then the copy is read back and hashed: one flipped byte is caught."""
    store, entry, ws = _store_one(tmp_path, (Link.COPY,), size=BIG + 12345)
    (_, digest) = entry.outputs["o"]
    obj = _object(store, entry)
    assert obj.read_bytes() == (ws / "out/model.bin").read_bytes()
    assert store.restore(digest, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == (ws / "out/model.bin").read_bytes()
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.seek(BIG)
        byte = f.read(1)
        f.seek(BIG)
        f.write(bytes([byte[0] ^ 1]))
    assert not store.restore(digest, tmp_path / "again.bin")
    assert not obj.exists() and not (tmp_path / "again.bin").exists()


def test_reflink_only_on_a_filesystem_that_cannot_clone_runs_the_stage_saying_why(ws: Workspace) -> None:
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("seed.txt", "1")
    assert ws.run_json() == {"make": "ran"}
    (ws.root / "out/blob.bin").unlink()
    res = ws.sluice("run", "--json", env={"SLUICE_LINK": "reflink"})
    assert res.code == 0, res.err
    make = res.json()["stages"]["make"]
    if make["outcome"] == "restored":
        pytest.skip("this filesystem can reflink")
    assert make["outcome"] == "ran"
    assert "SLUICE_LINK=reflink, and this filesystem cannot reflink" in make["reasons"][-1]
    assert make["reasons"][-1].endswith("running instead")


def test_copy_only_restores_by_copying(ws: Workspace) -> None:
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("seed.txt", "1")
    assert ws.run_json() == {"make": "ran"}
    (ws.root / "out/blob.bin").unlink()
    res = ws.sluice("run", "--json", env={"SLUICE_LINK": "copy"})
    assert res.code == 0 and res.json()["stages"]["make"]["outcome"] == "restored"


@pytest.mark.parametrize("value", ["hardlink", "symlink", "reflink,hardlink"])
def test_hard_and_symbolic_links_are_refused_with_the_reason(ws: Workspace, value: str) -> None:
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("seed.txt", "1")
    res = ws.sluice("run", env={"SLUICE_LINK": value})
    assert res.code == 2
    assert f"$SLUICE_LINK: '{value.split(',')[-1]}' is not offered: a restored output would share the cached object" in res.err


@pytest.mark.parametrize("command", [("run",), ("gc", "--dry-run"), ("cache", "verify"), ("pull",)])
def test_an_unknown_mode_is_a_problem_for_every_command_with_a_store(ws: Workspace, command: tuple[str, ...]) -> None:
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("seed.txt", "1")
    ws.write("sluice.remotes.yaml", f"version: 1\nremotes:\n  team:\n    url: {(ws.root / 'remote').as_uri()}\n")
    res = ws.sluice(*command, env={"SLUICE_LINK": "reflnk"})
    assert res.code == 2 and "$SLUICE_LINK: unknown mode 'reflnk'; expected reflink or copy" in res.err, (res.code, res.err)


# ---- a real copy-on-write filesystem


@pytest.fixture(scope="module")
def btrfs() -> Iterator[Path]:
    """A fresh 300 MB btrfs filesystem on a loop device, unmounted and deleted afterwards."""
    if os.geteuid() != 0 or shutil.which("mkfs.btrfs") is None or shutil.which("filefrag") is None:
        pytest.skip("needs root, mkfs.btrfs (apt-get install btrfs-progs) and filefrag for a loop-mounted btrfs")
    base = Path(tempfile.mkdtemp(prefix="sluice-btrfs-"))
    image, mount = base / "fs.img", base / "mnt"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    made = subprocess.run(["mkfs.btrfs", "-q", str(image)], capture_output=True, text=True, check=False)
    mounted = made.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, check=False)
    if not mounted or mounted.returncode != 0:
        shutil.rmtree(base)
        pytest.skip(f"cannot make a loop-mounted btrfs here: {made.stderr or getattr(mounted, 'stderr', b'').decode()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _extents(path: Path) -> list[str]:
    """The physical extents a file's bytes live in (filefrag -v): equal lists mean shared blocks."""
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[2].strip() for line in out.splitlines() if line.strip()[:1].isdigit() and line.count(":") >= 3]


def test_on_btrfs_outputs_are_stored_and_restored_as_reflinks(btrfs: Path) -> None:
    ws = Workspace(Path(tempfile.mkdtemp(dir=btrfs)))
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("seed.txt", "1")
    assert ws.run_json() == {"make": "ran"}
    blob = ws.root / "out/blob.bin"
    objects = [p for p in (ws.root / ".sluice/cache/objects").rglob("*") if p.is_file()]
    (obj,) = [p for p in objects if p.stat().st_size == BIG]
    assert _extents(blob) == _extents(obj) != []  # stored as a clone: the 8 MB are on disk once
    original = blob.read_bytes()
    blob.unlink()
    assert ws.run_json() == {"make": "restored"}
    assert blob.read_bytes() == original
    assert _extents(blob) == _extents(obj)  # restored as a clone too
    # What hard links would break: an in-place edit of the restored output leaves the object alone.
    with open(blob, "r+b") as f:
        f.write(b"edited in place")
        f.flush()
        os.fsync(f.fileno())  # btrfs places the new extent when the data is written out
    assert _extents(blob) != _extents(obj)
    verify = ws.sluice("cache", "verify")
    assert verify.code == 0, verify.out + verify.err
    assert ws.run_json() == {"make": "restored"}  # the edited output is stale; the clean object comes back
    assert blob.read_bytes() == original


def test_on_btrfs_a_corrupt_object_is_still_refused(btrfs: Path) -> None:
    ws = Workspace(Path(tempfile.mkdtemp(dir=btrfs)))
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("seed.txt", "1")
    assert ws.run_json() == {"make": "ran"}
    (obj,) = [p for p in (ws.root / ".sluice/cache/objects").rglob("*") if p.is_file() and p.stat().st_size == BIG]
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.write(b"bit rot")
    (ws.root / "out/blob.bin").unlink()
    res = ws.sluice("run", "--json")
    assert res.code == 0, res.err
    make = res.json()["stages"]["make"]
    assert make["outcome"] == "ran" and make["reasons"][-1] == "cache object for out/blob.bin is missing or corrupt; running instead"
    assert not obj.exists()
