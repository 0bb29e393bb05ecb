"""Fixtures for docker.build and k8s.*: a real trained model, a real Docker engine, the fake API server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import model_dir, sample_table  # noqa: F401  (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _daemon_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001  (any failure here just means "no usable daemon yet")
        return False


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """DOCKER_HOST of a running engine with the local base image; starts one via .ci/docker-up.sh if needed.

    Yields the base image name. Skips only when no daemon can be started on this machine.
    """
    # .ci/run sets SLUICE_REQUIRE_DOCKER once it has started a daemon: in CI a Docker test fails, never skips.
    give_up = pytest.fail if os.environ.get("SLUICE_REQUIRE_DOCKER") == "1" else pytest.skip
    if not (_daemon_answers() and os.environ.get("SLUICE_BASE_IMAGE")):
        script = REPO_ROOT / ".ci" / "docker-up.sh"
        if os.geteuid() != 0 and not shutil.which("dockerd"):
            give_up("no Docker daemon reachable (DOCKER_HOST) and cannot start one: not root and no dockerd")
        proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            give_up(f"no Docker daemon could be started by {script}: {proc.stderr.strip()[-500:]}")
        for line in proc.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key] = value
    yield os.environ["SLUICE_BASE_IMAGE"]
