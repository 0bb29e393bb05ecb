"""Issue 9: a failed or untested model never takes traffic (FAKE API server with injected faults)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages.model_gate import GateStage
from tests.deploy.test_k8s_deploy import BROKEN, GOOD, NEWER, WRONG, Workspace, bg, fake, pods, smoke_report  # noqa: F401  (fixtures)
from tests.fakes.fake_k8s_api import DROP, FakeKubernetesAPI
from tests.support.context import make_ctx

MODEL = "ab" * 32  # the model hash the image record says the image holds
OTHER = "cd" * 32


def _gate_report(tmp_path: Path, body: str | dict) -> Path:
    path = tmp_path / "gate.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def _passed(model: str | None = MODEL) -> dict:
    report = {"passed": True, "baseline_source": "file", "baseline": {}, "current": {"accuracy": 0.95}, "bootstrap": None, "verdicts": []}
    return {**report, "model": {"sha256": model, "version": model[:12]}} if model else report


# -- 3. the gate fails closed --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"passed": tr', "is not valid JSON"),
        ({}, 'has no "passed" field'),
        ({**_passed(), "passed": "false"}, '"passed" is "false" (a string), not true'),
        ({**_passed(), "passed": 0}, '"passed" is 0 (a number), not true'),
        ({**_passed(), "passed": False}, "says the model did not pass"),
        ([True], "is not a model.gate report"),
        ({k: v for k, v in _passed().items() if k != "verdicts"}, "has no verdicts list"),
        (_passed(model=None), "names no model"),
        (_passed(model=OTHER), f"vouches for model {OTHER[:12]}, but the image holds model {MODEL[:12]}"),
    ],
    ids=["truncated", "empty", "string-false", "zero", "false", "not-an-object", "no-verdicts", "no-model", "other-model"],
)
def test_anything_but_a_passed_report_for_this_model_stops_the_deploy(
    bg: Workspace, fake: FakeKubernetesAPI, tmp_path: Path, body: str | dict, fragment: str
) -> None:
    with pytest.raises(StageFailed, match="refusing to deploy") as info:
        bg.deploy(GOOD, model_hash=MODEL, gate=_gate_report(tmp_path, body))
    assert fragment in str(info.value)
    assert fake.get("deployments", "default", "bc-blue") is None  # nothing was written to the cluster
    assert not [m for m, _ in fake.requests if m in ("POST", "PUT")]


def test_image_without_model_hash_cannot_be_matched_to_the_gate(bg: Workspace, tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="the image record names no model hash"):
        bg.deploy(GOOD, gate=_gate_report(tmp_path, _passed()))


def test_passed_report_for_this_model_deploys(bg: Workspace, tmp_path: Path) -> None:
    record = bg.deploy(GOOD, model_hash=MODEL, gate=_gate_report(tmp_path, _passed()))
    assert record["gate"]["passed"] is True and record["gate"]["model"] == MODEL
    assert record["live_colour"] == "blue"


def test_model_gate_names_the_verified_model(model_dir: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.95}))
    config = {"rules": {"accuracy": {"min": 0.9}}, "accept": False}
    ctx = make_ctx(tmp_path, config, {"metrics": metrics, "model": model_dir}, {"report": "gate.json"}, stage="gate")
    GateStage().run(ctx)
    report = json.loads(ctx.outputs["report"].read_text())
    claimed = json.loads((model_dir / "metadata.json").read_text())["model_hash"]["value"]
    assert report["model"] == {"sha256": claimed, "version": claimed[:12]}


# -- 1. rollback returns to the last release that passed its smoke test --------------------


def _record(ws: Workspace) -> dict:
    return json.loads((ws.root / "out" / "record.json").read_text())


def test_deploy_records_the_release_that_passed(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    record = bg.deploy(GOOD)
    dep = fake.get("deployments", "default", "bc-blue")
    assert dep is not None
    label = dep["spec"]["template"]["metadata"]["labels"]["sluice.dev/pod-template-hash"]
    assert record["release"]["template_hash"] == label and record["release"]["image"] == GOOD
    releases = json.loads((bg.root / ".sluice" / "state" / "deploy" / "releases.json").read_text())
    assert [(r["image"], r["template_hash"]) for r in releases] == [(GOOD, label)]


def test_rollback_never_switches_to_a_colour_holding_a_failed_image(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)  # blue
    bg.deploy(NEWER)  # green live, blue keeps GOOD
    with pytest.raises(StageFailed, match="smoke test against bc-blue failed"):
        bg.deploy(WRONG)  # re-fills blue with an image that answers wrongly
    with pytest.raises(
        StageFailed,
        match=f"cannot roll back: the last release that passed its smoke test, {GOOD} .* on bc-blue, is gone: bc-blue now runs {WRONG}",
    ) as info:
        bg.rollback()
    assert "traffic stays on bc-green" in str(info.value)
    assert _live(fake) == "green"


def test_rollback_after_a_failed_deploy_returns_to_the_last_passed_release(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)  # blue
    bg.deploy(NEWER)  # green
    bg.deploy(GOOD)  # blue again (GOOD's template, re-tested)
    with pytest.raises(StageFailed, match="rollout of bc-green failed"):
        bg.deploy(BROKEN)  # green now holds a failed image
    # The last passed release other than the live one (GOOD on blue) was NEWER on green: gone.
    with pytest.raises(StageFailed, match=f"is gone: bc-green now runs {BROKEN}"):
        bg.rollback()
    assert _live(fake) == "blue"


def _live(fake: FakeKubernetesAPI) -> str:
    service = fake.get("services", "default", "bc")
    assert service is not None
    return str(service["spec"]["selector"]["sluice.dev/colour"])


# -- 2. one deploy at a time (a Lease), and the live Service selects the tested template ---


def _lease(fake: FakeKubernetesAPI) -> dict | None:
    return fake.get("leases", "default", "bc-deploy")


def test_a_second_deploy_while_one_runs_is_refused(tmp_path: Path, fake: FakeKubernetesAPI, smoke_report: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Workspace(tmp_path / "a", fake, smoke_report, "blue-green")
    second = Workspace(tmp_path / "b", fake, smoke_report, "blue-green")  # another CI job, another checkout
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(record=first.deploy(NEWER)))
    thread.start()
    deadline = time.monotonic() + 20
    while not ((_lease(fake) or {}).get("spec") or {}).get("holderIdentity"):
        assert time.monotonic() < deadline, "the first deploy never took the lease"
        time.sleep(0.01)
    with pytest.raises(StageFailed, match="another deploy holds the lease default/bc-deploy"):
        second.deploy(WRONG)
    thread.join(30)
    assert outcome["record"]["live_colour"] == "blue"
    lease = _lease(fake)
    assert lease is not None and not lease["spec"].get("holderIdentity")  # released after the deploy
    assert lease["spec"]["leaseDurationSeconds"] > 0


def _stale_lease(fake: FakeKubernetesAPI) -> dict:
    """A Lease whose holder stopped renewing it long ago (a deploy that was killed)."""
    meta = {
        "name": "bc-deploy",
        "namespace": "default",
        "resourceVersion": "1",
        "uid": "u-1",
        "generation": 1,
        "creationTimestamp": "2020-01-01T00:00:00Z",
    }
    stale = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
             "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 60, "renewTime": "2020-01-01T00:00:00.000000Z"}}  # fmt: skip
    fake.objects[("leases", "default", "bc-deploy")] = stale
    return stale


def test_an_expired_lease_is_taken_over(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    _stale_lease(fake)
    record = bg.deploy(GOOD)
    assert record["live_colour"] == "blue" and "ghost" in record["lease"]["took_over_from"]


def test_losing_the_race_for_the_lease_stops_before_any_write(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    stale = _stale_lease(fake)

    def rival(method: str, path: str) -> None:  # another deploy takes the expired lease first
        if method == "PUT" and "/leases/" in path and stale["spec"]["holderIdentity"] == "ghost":
            stale["spec"]["holderIdentity"] = "rival"
            stale["metadata"]["resourceVersion"] = "2"

    fake.before.append(rival)
    with pytest.raises(StageFailed, match="another deploy took the lease default/bc-deploy first \\(rival\\)"):
        bg.deploy(GOOD)
    assert fake.get("deployments", "default", "bc-blue") is None


def test_live_service_selects_exactly_the_tested_pod_template(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)
    dep = fake.get("deployments", "default", "bc-blue")
    service = fake.get("services", "default", "bc")
    assert dep is not None and service is not None
    tested = dep["spec"]["template"]["metadata"]["labels"]["sluice.dev/pod-template-hash"]
    assert service["spec"]["selector"]["sluice.dev/pod-template-hash"] == tested
    # Another deployer re-fills the live colour with an untested template behind this deploy's back.
    fake.refill("default", "bc-blue", WRONG, {"sluice.dev/pod-template-hash": "0123456789"})
    time.sleep(0.3)  # WRONG's pods are ready now and the tested ones gone
    code, body, _ = fake.handle("GET", "/api/v1/namespaces/default/services/bc:80/proxy/ready", b"", {"authorization": "Bearer fake-token"})
    assert code == 503, body  # no endpoints rather than an untested model


# -- 5. read back what matters; retry one transient 500 --------------------------------------


def test_a_lost_answer_to_the_switch_is_read_back_and_recorded_truthfully(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)
    fake.inject("PUT", r"/services/bc$", DROP)  # the switch commits; its answer never arrives
    record = bg.deploy(NEWER)
    assert record["live_colour"] == "green" and _live(fake) == "green"
    assert "read back" in record["changed"]["Service/bc"]
    assert bg.rollback().startswith("traffic switched from bc-green back to bc-blue")
    assert _live(fake) == "blue"


def test_one_transient_500_is_retried(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    fake.inject("POST", r"/deployments$", 500)
    fake.inject("GET", r"/services/bc$", 503)
    record = bg.deploy(GOOD)
    assert record["live_colour"] == "blue"


def test_a_server_that_keeps_failing_is_given_up_on(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    fake.inject("POST", r"/deployments$", 500, times=100)
    started = time.monotonic()
    with pytest.raises(StageFailed, match=r"applying Deployment default/bc-blue failed: 500 .*after 3 attempts"):
        bg.deploy(GOOD)
    assert time.monotonic() - started < 10
