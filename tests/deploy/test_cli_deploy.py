"""End to end through the CLI: `sluice run` deploys blue-green to the FAKE API server, `sluice rollback` undoes it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_k8s_api import FakeKubernetesAPI, ImageBehaviour
from tests.support.servers import running

PIPELINE = """\
version: 1
name: bc
params:
  image: sluice/bc:v1
stages:
  manifests:
    uses: k8s.manifests
    with: {image: "${params.image}", strategy: blue-green, app: bc, replicas: 1}
    outputs: {manifests: deploy/manifests}
  deploy:
    uses: k8s.deploy
    with: {strategy: blue-green, kubeconfig: kubeconfig, rollout_timeout: 5, poll_interval: 0.05}
    inputs: {manifests: "${stages.manifests.outputs.manifests}"}
    outputs: {record: deploy/record.json}
"""


@pytest.fixture
def fake(model_dir: Path) -> Iterator[FakeKubernetesAPI]:
    from sluice.stages.serving.app import create_app

    with running(create_app(model_dir)) as pod:
        api = FakeKubernetesAPI(images={"sluice/bc:v1": ImageBehaviour(backend=pod), "sluice/bc:v2": ImageBehaviour(backend=pod)})
        api.start()
        yield api
        api.stop()


def _sluice(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice", *args], cwd=ws, capture_output=True, text=True, timeout=120, check=False)


def test_run_deploys_and_rollback_switches_back(tmp_path: Path, fake: FakeKubernetesAPI) -> None:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    fake.write_kubeconfig(tmp_path / "kubeconfig")
    first = _sluice(tmp_path, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _sluice(tmp_path, "run", "--set", "image=sluice/bc:v2")
    assert second.returncode == 0, second.stdout + second.stderr
    record = json.loads((tmp_path / "deploy" / "record.json").read_text())
    assert (record["live_colour"], record["previous_image"]) == ("green", "sluice/bc:v1")
    back = _sluice(tmp_path, "rollback", "deploy", "--set", "image=sluice/bc:v2")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "back to bc-blue" in back.stdout + back.stderr
    service = fake.get("services", "default", "bc")
    assert service is not None and service["spec"]["selector"]["sluice.dev/colour"] == "blue"
