"""Real S3 servers on 127.0.0.1 for the remote-cache tests: SeaweedFS (`weed server -s3`) and `rclone serve s3`.

SeaweedFS enforces conditional writes and checksums; rclone serves a plain folder, so a test can
corrupt an object behind the server's back by editing a file.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
KEY, SECRET = "sluice-test", "sluice-test-secret"


def _port_pair() -> int:
    """A free port whose +10000 neighbour (SeaweedFS's gRPC default) is free too; we pass both anyway."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def wait_serving(probe: Callable[[], T], proc: subprocess.Popen[bytes], log: Path, what: str, seconds: float, pause: float = 0.2) -> T:
    """`probe()`'s answer once it gives one (an OSError: not yet); the server's log if it exits or stays silent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            return probe()
        except OSError:
            time.sleep(pause)
    raise RuntimeError(f"{what} did not answer within {seconds:g}s:\n{log.read_text()[-3000:]}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    def ask() -> None:
        try:
            urllib.request.urlopen(url, timeout=1)
        except urllib.error.HTTPError:
            return  # any HTTP answer: it is serving

    wait_serving(ask, proc, log, url, seconds)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def seaweedfs(folder: Path, buckets: tuple[str, ...] = ("sluice-test",)) -> Iterator[str]:
    """`weed server` with master, volume, filer and S3 on free ports, `buckets` made; yields the S3 endpoint URL."""
    weed = shutil.which("weed")
    if weed is None:
        raise FileNotFoundError("weed")
    folder.mkdir(parents=True, exist_ok=True)
    master, volume, filer, s3 = (_port_pair() for _ in range(4))
    argv = [
        weed, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0",
        f"-master.port={master}", f"-master.port.grpc={master + 10000}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3 + 10000}", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    log = folder / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{s3}/", proc, log)
        endpoint = f"http://127.0.0.1:{s3}"
        _make_buckets(endpoint, buckets)
        yield endpoint
    finally:
        _stop(proc)


def _make_buckets(endpoint: str, buckets: tuple[str, ...]) -> None:
    """Uploads create no bucket for a non-admin identity: make them first, as an operator would."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"}, skip_instance_cache=True
    )
    for bucket in buckets:
        fs.mkdir(bucket)


@contextmanager
def rclone_s3(folder: Path) -> Iterator[str]:
    """`rclone serve s3` over `folder` (each bucket a subfolder, each object a plain file)."""
    rclone = shutil.which("rclone")
    if rclone is None:
        raise FileNotFoundError("rclone")
    folder.mkdir(parents=True, exist_ok=True)
    port = _port_pair()
    log = folder.parent / f"{folder.name}-rclone.log"
    argv = [rclone, "serve", "s3", str(folder), "--addr", f"127.0.0.1:{port}", "--auth-key", f"{KEY},{SECRET}", "--config", "/dev/null"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
