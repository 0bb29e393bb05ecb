"""Storing and restoring one big output: reflinks against copies, on btrfs and on this machine's /tmp.

    python benchmarks/reflink_bench.py [--mb 256]

Makes a loop-mounted btrfs (needs root and mkfs.btrfs; skipped otherwise), and on it and on
/tmp stores a file in a Store and restores it, with SLUICE_LINK's two modes. Prints seconds
for each (best of 3) and the disk space the store and the restored copy took beyond the file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sluice.engine.cache import Link, Store
from sluice.engine.fingerprint import HashCache


@contextmanager
def btrfs(mb: int) -> Iterator[Path | None]:
    if os.geteuid() != 0 or shutil.which("mkfs.btrfs") is None:
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="sluice-bench-btrfs-"))
    image, mount = base / "fs.img", base / "mnt"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate((mb * 6 + 300) << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def used(folder: Path) -> int:
    os.sync()
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def trial(root: Path, mb: int, links: tuple[Link, ...]) -> tuple[float, float, int]:
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        src = work / "model.bin"
        with open(src, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        digest = HashCache(work / "h.db", work).digest("model.bin")
        before = used(root)
        store = Store(work / "cache", links=links)
        t0 = time.perf_counter()
        store.put(src, digest)
        store.flusher.settle()
        t1 = time.perf_counter()
        assert store.restore(digest, work / "back.bin")
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, used(root) - before
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    mb = ap.parse_args().mb
    with btrfs(mb) as mount:
        places = [("btrfs (loop)", mount)] if mount else []
        places.append(("/tmp", Path(tempfile.gettempdir())))
        print(f"{mb} MB output: store, restore (best of 3), extra disk used")
        for name, root in places:
            for label, links in (("reflink,copy", (Link.REFLINK, Link.COPY)), ("copy", (Link.COPY,))):
                runs = [trial(root, mb, links) for _ in range(3)]
                put, back = min(r[0] for r in runs), min(r[1] for r in runs)
                extra = min(r[2] for r in runs)
                print(f"  {name:13} SLUICE_LINK={label:13} store {put:6.3f} s  restore {back:6.3f} s  extra {extra / 2**20:7.1f} MB")
    if not mount:
        print("  (no loop-mounted btrfs: needs root and mkfs.btrfs)")


if __name__ == "__main__":
    main()
