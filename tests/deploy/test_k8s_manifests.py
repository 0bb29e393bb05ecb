"""k8s.manifests: every rendered object passes the official Kubernetes schemas and carries the hardening."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sluice.engine.plugin import StageFailed
from sluice.stages.k8s_manifests import ManifestsStage, render
from tests.support.context import make_ctx

IMAGE = {
    "reference": "sluice/breast-cancer:dev-0123456789ab",
    "image_id": "sha256:" + "ab" * 32,
    "model_hash": "0123456789ab" + "0" * 52,
    "model_version": "0123456789ab",
    "port": 8000,
    "tags": [],
}


def _render(tmp_path: Path, **config: object) -> tuple[dict, list[dict]]:
    record = tmp_path / "image.json"
    record.write_text(json.dumps(IMAGE))
    ctx = make_ctx(tmp_path, config, {"image": record}, {"manifests": "manifests"}, pipeline="breast-cancer")
    ManifestsStage().run(ctx)
    out = ctx.outputs["manifests"]
    index = json.loads((out / "index.json").read_text())
    return index, [yaml.safe_load((out / o["file"]).read_text()) for o in index["objects"]]


@pytest.mark.parametrize("version", ["1.27", "1.30", "1.33"])
@pytest.mark.parametrize("strategy", ["rolling", "blue-green"])
def test_every_object_passes_official_schemas(tmp_path: Path, strategy: str, version: str) -> None:
    _, objects = _render(tmp_path, strategy=strategy, autoscaling={"max_replicas": 5}, validate_against=None)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 2  # rolling: the live one and the one-pod preview
    assert "HorizontalPodAutoscaler" in kinds
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_rolling_renders_a_preview_service_apart_from_the_live_one(tmp_path: Path) -> None:
    index, objects = _render(tmp_path, strategy="rolling", validate_against=None)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    live, preview = by_name[("Service", "breast-cancer")], by_name[("Service", "breast-cancer-preview")]
    assert live["spec"]["selector"]["sluice.dev/track"] == "stable" and preview["spec"]["selector"]["sluice.dev/track"] == "preview"
    assert by_name[("Deployment", "breast-cancer-preview")]["spec"]["replicas"] == 1
    assert {(o["role"], o["kind"]) for o in index["objects"] if o["name"] == "breast-cancer-preview"} == {
        ("preview", "Deployment"),
        ("preview", "Service"),
    }


def test_deployment_is_hardened_and_probed(tmp_path: Path) -> None:
    _, objects = _render(tmp_path, strategy="blue-green")
    dep = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "breast-cancer-green")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "breast-cancer",
        "app.kubernetes.io/version": "0123456789ab",
        "app.kubernetes.io/managed-by": "sluice",
        "sluice.dev/colour": "green",
    }
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE["reference"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert dep["spec"]["template"]["metadata"]["annotations"]["sluice.dev/image-id"] == IMAGE["image_id"]


def test_blue_green_services(tmp_path: Path) -> None:
    index, objects = _render(tmp_path, strategy="blue-green", namespace="ml")
    roles = {(o["role"], o["colour"]): o["name"] for o in index["objects"]}
    assert roles[("live", None)] == "breast-cancer"
    assert roles[("preview", "blue")] == "breast-cancer-blue"
    live = next(o for o in objects if o["metadata"]["name"] == "breast-cancer" and o["kind"] == "Service")
    assert live["spec"]["selector"] == {"app.kubernetes.io/name": "breast-cancer", "sluice.dev/colour": "blue"}
    assert all(o["metadata"]["namespace"] == "ml" for o in objects)


def test_schema_violation_is_reported(tmp_path: Path) -> None:
    from sluice.stages.k8s_manifests import validate_objects

    (_, dep), *_ = render("app", IMAGE, ManifestsStage().with_defaults({"strategy": "rolling"}))
    dep["spec"]["replicas"] = "two"
    with pytest.raises(StageFailed, match=r"fail the Kubernetes 1\.30 schemas") as info:
        validate_objects([dep], "1.30")
    assert "Deployment/app: spec.replicas" in info.value.details


def test_min_above_max_replicas_is_a_config_problem() -> None:
    problems = list(ManifestsStage().check({"replicas": 4, "autoscaling": {"max_replicas": 2}}))
    assert [p.message for p in problems] == ["min_replicas is greater than max_replicas"]


def test_needs_an_image(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {}, {}, {"manifests": "m"})
    with pytest.raises(StageFailed, match="needs an `image` input"):
        ManifestsStage().run(ctx)
