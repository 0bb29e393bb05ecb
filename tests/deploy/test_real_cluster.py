"""k8s.deploy against a REAL cluster: runs only with KUBECONFIG and SLUICE_TEST_IMAGE (see docs/deploy.md)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.stages.k8s_deploy import DeployStage
from sluice.stages.k8s_manifests import ManifestsStage
from sluice.stages.serve_smoke import SmokeStage
from tests.support.context import make_ctx

pytestmark = pytest.mark.cluster


def _cluster_or_skip() -> tuple[str, str]:
    kubeconfig, image = os.environ.get("KUBECONFIG"), os.environ.get("SLUICE_TEST_IMAGE")
    if not kubeconfig or not Path(kubeconfig.split(os.pathsep)[0]).is_file():
        pytest.skip("KUBECONFIG does not point at a kubeconfig file; no real cluster to test against")
    if not image:
        pytest.skip("SLUICE_TEST_IMAGE is not set: build one with docker.build and make the cluster able to pull it")
    try:
        from kubernetes import client, config

        client.VersionApi(config.new_client_from_config()).get_code(_request_timeout=5)
    except Exception as exc:  # noqa: BLE001  (whatever the reason, there is no cluster to talk to)
        pytest.skip(f"the cluster in KUBECONFIG is not reachable: {exc}")
    return kubeconfig, image


@pytest.fixture
def namespace() -> Iterator[str]:
    from kubernetes import client, config

    _cluster_or_skip()
    core = client.CoreV1Api(config.new_client_from_config())
    name = f"sluice-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_blue_green_deploy_and_rollback(namespace: str, tmp_path: Path, sample_table: Path) -> None:
    _, image = _cluster_or_skip()
    model = Path(os.environ.get("SLUICE_TEST_MODEL", ""))
    inputs: dict[str, Path] = {}
    if (model / "metadata.json").is_file():
        smoke = make_ctx(tmp_path, {"rows": 10}, {"model": model, "data": sample_table}, {"report": "smoke.json"})
        SmokeStage().run(smoke)
        inputs["smoke_cases"] = smoke.outputs["report"]

    def deploy(replicas: int) -> dict:
        manifests = make_ctx(tmp_path, {"image": image, "strategy": "blue-green", "app": "bc", "namespace": namespace,
                                        "replicas": replicas, "image_pull_policy": "IfNotPresent"}, {}, {"manifests": "m"})  # fmt: skip
        ManifestsStage().run(manifests)
        ctx = make_ctx(tmp_path, {"rollout_timeout": 240, "poll_interval": 2}, {"manifests": manifests.outputs["manifests"], **inputs},
                       {"record": "record.json"}, stage="deploy")  # fmt: skip
        DeployStage().run(ctx)
        return json.loads(ctx.outputs["record"].read_text())

    assert deploy(1)["live_colour"] == "blue"
    assert deploy(2)["live_colour"] == "green"  # a different spec, so a new colour
    ctx = make_ctx(tmp_path, {"rollout_timeout": 120}, {}, {"record": "record.json"}, stage="deploy")
    assert "back to bc-blue" in DeployStage().rollback(ctx)
