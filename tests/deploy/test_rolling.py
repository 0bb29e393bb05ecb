"""Issue 9 item 4: rolling deploys test the candidate off the live path, leave replicas to the HPA,
and roll back truthfully (FAKE API server, real serving apps as the pods)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluice.engine.plugin import StageFailed
from tests.deploy.test_k8s_deploy import BROKEN, GOOD, NEWER, WRONG, Workspace, fake, pods, smoke_report  # noqa: F401  (fixtures)
from tests.fakes.fake_k8s_api import FakeKubernetesAPI


@pytest.fixture
def rolling(tmp_path: Path, fake: FakeKubernetesAPI, smoke_report: Path) -> Workspace:
    return Workspace(tmp_path, fake, smoke_report, "rolling")


def _image(fake: FakeKubernetesAPI, name: str = "bc") -> str:
    dep = fake.get("deployments", "default", name)
    assert dep is not None
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def _proxied(fake: FakeKubernetesAPI, service: str) -> int:
    return sum(1 for _, path in fake.requests if f"/services/{service}:80/proxy" in path)


def test_the_candidate_is_smoked_through_a_preview_service_never_the_live_one(rolling: Workspace, fake: FakeKubernetesAPI) -> None:
    rolling.deploy(GOOD)
    live_before = _proxied(fake, "bc")
    with pytest.raises(StageFailed, match=f"smoke test against bc-preview failed: .*; traffic stays on bc revision 1 \\({GOOD}\\)"):
        rolling.deploy(WRONG)
    assert _proxied(fake, "bc") == live_before  # users' Service never carried a smoke request
    assert _proxied(fake, "bc-preview") > 0
    assert _image(fake) == GOOD  # the live Deployment was never touched by the failed candidate
    dep = fake.get("deployments", "default", "bc")
    assert dep is not None and dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    # Users' pods answer with the live model the whole time: the live Service never selects the preview pods.
    live = fake.get("services", "default", "bc")
    assert live is not None and live["spec"]["selector"].get("sluice.dev/track") == "stable"


def test_a_candidate_that_never_gets_ready_leaves_the_live_deployment_alone(rolling: Workspace, fake: FakeKubernetesAPI) -> None:
    rolling.deploy(GOOD)
    with pytest.raises(
        StageFailed, match=f"rollout of bc-preview failed: .*not ready within 3 s; traffic stays on bc revision 1 \\({GOOD}\\)"
    ):
        rolling.deploy(BROKEN)
    assert _image(fake) == GOOD


def test_replicas_are_left_to_the_hpa(rolling: Workspace, fake: FakeKubernetesAPI) -> None:
    rolling.manifest_settings = {"autoscaling": {"max_replicas": 8}}
    rolling.deploy(GOOD)
    fake.set_replicas("default", "bc", 6)  # the HPA scaled up under load
    record = rolling.deploy(NEWER)
    dep = fake.get("deployments", "default", "bc")
    assert dep is not None and dep["spec"]["replicas"] == 6
    assert _image(fake) == NEWER and record["changed"]["Deployment/bc"] == "updated"


def test_rollback_after_a_failed_deploy_names_both_versions(rolling: Workspace, fake: FakeKubernetesAPI) -> None:
    rolling.deploy(GOOD)
    rolling.deploy(NEWER)
    with pytest.raises(StageFailed, match="smoke test against bc-preview failed"):
        rolling.deploy(WRONG)
    summary = rolling.rollback()
    assert summary.startswith(f"bc rolled back from {NEWER} to {GOOD} (revision "), summary
    assert _image(fake) == GOOD
    record = json.loads((rolling.root / "out" / "record.json").read_text())
    assert (record["image"]["reference"], record["previous_image"]) == (GOOD, NEWER)
    # A second rollback goes forward again: NEWER passed too.
    assert rolling.rollback().startswith(f"bc rolled back from {GOOD} to {NEWER}")


def test_rollback_refuses_when_no_earlier_release_passed(rolling: Workspace, fake: FakeKubernetesAPI) -> None:
    rolling.deploy(GOOD)
    with pytest.raises(StageFailed, match="smoke test against bc-preview failed"):
        rolling.deploy(WRONG)
    with pytest.raises(StageFailed, match="nothing to roll back to: no release of bc other than the live one passed its smoke test"):
        rolling.rollback()
    assert _image(fake) == GOOD


def test_a_lost_lease_stops_before_the_live_deployment_is_changed(rolling: Workspace, fake: FakeKubernetesAPI) -> None:
    rolling.deploy(GOOD)

    def rival(method: str, path: str) -> None:  # another deploy takes the lease while this one smoke-tests
        lease = fake.objects.get(("leases", "default", "bc-deploy"))
        if "/proxy/" in path and lease and lease["spec"].get("holderIdentity"):
            lease["spec"]["holderIdentity"] = "rival"
            lease["metadata"]["resourceVersion"] = "9999"

    fake.before.append(rival)
    with pytest.raises(StageFailed, match="lost the deploy lease default/bc-deploy: it is now held by rival"):
        rolling.deploy(NEWER)
    assert _image(fake) == GOOD
