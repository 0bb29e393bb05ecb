"""k8s.deploy against the FAKE API server (tests/fakes/fake_k8s_api.py), with real serving apps as the pods."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages.k8s_deploy import DeployStage
from sluice.stages.k8s_manifests import ManifestsStage
from sluice.stages.serve_smoke import SmokeStage
from tests.fakes.fake_k8s_api import FakeKubernetesAPI, ImageBehaviour
from tests.support.context import make_ctx
from tests.support.models import write_model_dir
from tests.support.servers import running

GOOD, NEWER, BROKEN, WRONG = "sluice/bc:v1-aaaa", "sluice/bc:v2-bbbb", "sluice/bc:v3-cccc", "sluice/bc:v4-dddd"
FAST = {"rollout_timeout": 3, "poll_interval": 0.05, "request_timeout": 5}


@pytest.fixture(scope="module")
def pods(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Real serving apps standing in for pods: the right model, and a different one (wrong answers)."""
    from sluice.stages.serving.app import create_app

    other = write_model_dir(tmp_path_factory.mktemp("other") / "model", c=1e-4)
    with running(create_app(model_dir)) as good, running(create_app(other)) as wrong:
        yield {"good": good, "wrong": wrong}


@pytest.fixture
def fake(pods: dict[str, str]) -> Iterator[FakeKubernetesAPI]:
    api = FakeKubernetesAPI()
    api.images = {
        GOOD: ImageBehaviour(ready_after=0.1, backend=pods["good"]),
        NEWER: ImageBehaviour(ready_after=0.3, backend=pods["good"]),
        BROKEN: ImageBehaviour(never_ready=True, backend=pods["good"]),
        WRONG: ImageBehaviour(ready_after=0.1, backend=pods["wrong"]),
    }
    api.start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def smoke_report(model_dir: Path, sample_table: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("smoke")
    ctx = make_ctx(ws, {"rows": 10}, {"model": model_dir, "data": sample_table}, {"report": "smoke.json"})
    SmokeStage().run(ctx)
    return ctx.outputs["report"]


class Workspace:
    """One pipeline workspace: render manifests for an image, then deploy them, as the pipeline would."""

    def __init__(self, root: Path, fake: FakeKubernetesAPI, smoke: Path, strategy: str):
        self.root, self.strategy, self.smoke = root, strategy, smoke
        self.kubeconfig = fake.write_kubeconfig(root / "kubeconfig")
        self.manifest_settings: dict = {}

    def deploy(self, image: str, model_hash: str | None = None, **extra_inputs: Path) -> dict:
        ctx = self._ctx(image, extra_inputs, model_hash)
        DeployStage().run(ctx)
        return json.loads(ctx.outputs["record"].read_text())

    def rollback(self) -> str:
        ctx = make_ctx(self.root, {"kubeconfig": str(self.kubeconfig), **FAST}, {}, {"record": "record.json"}, stage="deploy")
        return DeployStage().rollback(ctx)

    def _ctx(self, image: str, extra_inputs: dict[str, Path], model_hash: str | None = None):  # type: ignore[no-untyped-def]
        settings: dict = {"strategy": self.strategy, "app": "bc", "replicas": 2, **self.manifest_settings}
        image_input = {}
        if model_hash:  # as docker.build records it: the image names the model it holds
            record = self.root / "image.json"
            record.write_text(
                json.dumps({"reference": image, "image_id": None, "model_hash": model_hash, "model_version": model_hash[:12]})
            )
            image_input = {"image": record}
        else:
            settings["image"] = image
        manifests = make_ctx(self.root, settings, image_input, {"manifests": "manifests"}, stage="manifests")
        ManifestsStage().run(manifests)
        inputs = {"manifests": manifests.outputs["manifests"], "smoke_cases": self.smoke, **extra_inputs}
        config = {"kubeconfig": str(self.kubeconfig), "strategy": self.strategy, **FAST}
        return make_ctx(self.root, config, inputs, {"record": "record.json"}, stage="deploy")


@pytest.fixture
def bg(tmp_path: Path, fake: FakeKubernetesAPI, smoke_report: Path) -> Workspace:
    return Workspace(tmp_path, fake, smoke_report, "blue-green")


def _live(fake: FakeKubernetesAPI) -> str:
    service = fake.get("services", "default", "bc")
    assert service is not None
    return str(service["spec"]["selector"]["sluice.dev/colour"])


def test_deploy_is_never_skipped_from_cache() -> None:
    assert DeployStage.always_run is True


def test_first_deploy_goes_live_on_blue(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    record = bg.deploy(GOOD)
    assert (record["live_colour"], record["previous_colour"]) == ("blue", None)
    assert _live(fake) == "blue"
    assert record["smoke"]["passed"] is True and record["smoke"]["rows"] == 10
    assert record["changed"]["Deployment/bc-blue"] == "created"


def test_deploy_applies_the_disruption_budget_and_network_policy(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    record = bg.deploy(GOOD)
    assert record["changed"]["PodDisruptionBudget/bc-blue"] == "created" and record["changed"]["NetworkPolicy/bc"] == "created"
    assert fake.get("poddisruptionbudgets", "default", "bc-blue")["spec"]["maxUnavailable"] == 1  # type: ignore[index]
    assert fake.get("networkpolicies", "default", "bc")["spec"]["egress"] == []  # type: ignore[index]


def test_second_deploy_switches_to_green_and_keeps_blue(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)
    record = bg.deploy(NEWER)
    assert (record["live_colour"], record["previous_colour"], record["previous_image"]) == ("green", "blue", GOOD)
    assert _live(fake) == "green"
    assert fake.get("deployments", "default", "bc-blue") is not None  # kept for rollback


def test_same_image_again_changes_nothing(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)

    def writes() -> int:  # the deploy Lease is taken and released every time; nothing else may change
        return sum(1 for method, path in fake.requests if method in ("POST", "PUT") and "/leases" not in path)

    before = writes()
    record = bg.deploy(GOOD)
    assert record["summary"] == "bc-blue already serves this image; nothing to do"
    assert writes() == before


def test_rollout_never_ready_times_out_and_live_colour_is_untouched(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)
    with pytest.raises(StageFailed, match=r"rollout of bc-green failed: .* not ready within 3 s; traffic stays on bc-blue") as info:
        bg.deploy(BROKEN)
    assert "readyReplicas=0" in info.value.details
    assert _live(fake) == "blue"


def test_failed_smoke_test_does_not_switch(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)
    with pytest.raises(StageFailed, match=r"smoke test against bc-green failed: .*differ from offline ones; traffic stays on bc-blue"):
        bg.deploy(WRONG)
    assert _live(fake) == "blue"


def test_rollback_switches_back_and_forth(bg: Workspace, fake: FakeKubernetesAPI) -> None:
    bg.deploy(GOOD)
    bg.deploy(NEWER)
    assert bg.rollback() == f"traffic switched from bc-green back to bc-blue ({GOOD})"
    assert _live(fake) == "blue"
    record = json.loads((bg.root / "out" / "record.json").read_text())
    assert (record["live_colour"], record["previous_colour"]) == ("blue", "green")
    assert bg.rollback().startswith("traffic switched from bc-blue back to bc-green")
    history = (bg.root / ".sluice" / "state" / "deploy" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in history] == ["deploy", "deploy", "rollback", "rollback"]


def test_rollback_after_first_deploy_has_nothing_to_go_back_to(bg: Workspace) -> None:
    bg.deploy(GOOD)
    with pytest.raises(StageFailed, match="nothing to roll back to: no release of bc other than the live one passed its smoke test"):
        bg.rollback()


def test_record_links_gate_and_image(bg: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"passed": True, "verdicts": [], "model": {"sha256": "ab" * 32}}))
    record = bg.deploy(GOOD, model_hash="ab" * 32, gate=gate)
    assert record["gate"]["path"] == "gate.json" and record["gate"]["passed"] is True
    assert len(record["gate"]["sha256"]) == 64
    assert record["image"]["reference"] == GOOD


def test_failed_gate_refuses_to_deploy(bg: Workspace, fake: FakeKubernetesAPI, tmp_path: Path) -> None:
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"passed": False}))
    with pytest.raises(StageFailed, match=r"refusing to deploy: .* says the model did not pass"):
        bg.deploy(GOOD, gate=gate)
    assert fake.get("services", "default", "bc") is None


def test_unreachable_cluster(tmp_path: Path, smoke_report: Path) -> None:
    dead = FakeKubernetesAPI()
    dead.start()
    ws = Workspace(tmp_path, dead, smoke_report, "blue-green")
    dead.stop()  # the kubeconfig now points at a port nobody listens on
    with pytest.raises(StageFailed, match=f"cannot reach the Kubernetes API server at {dead.url}"):
        ws.deploy(GOOD)


def test_rolling_update_and_undo_on_failure(tmp_path: Path, fake: FakeKubernetesAPI, smoke_report: Path) -> None:
    ws = Workspace(tmp_path, fake, smoke_report, "rolling")
    first = ws.deploy(GOOD)
    assert first["revision"] == "1"
    second = ws.deploy(NEWER)
    assert (second["revision"], second["previous_image"]) == ("2", GOOD)
    with pytest.raises(
        StageFailed, match=f"rollout of bc-preview failed: .*not ready within 3 s; traffic stays on bc revision 2 \\({NEWER}\\)"
    ):
        ws.deploy(BROKEN)
    dep = fake.get("deployments", "default", "bc")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"] == NEWER


def test_rolling_rollback(tmp_path: Path, fake: FakeKubernetesAPI, smoke_report: Path) -> None:
    ws = Workspace(tmp_path, fake, smoke_report, "rolling")
    ws.deploy(GOOD)
    ws.deploy(NEWER)
    assert ws.rollback() == f"bc rolled back from {NEWER} to {GOOD} (revision 3)"


def test_strategy_mismatch(tmp_path: Path, fake: FakeKubernetesAPI, smoke_report: Path) -> None:
    ws = Workspace(tmp_path, fake, smoke_report, "rolling")
    ctx = ws._ctx(GOOD, {})
    ctx.config["strategy"] = "blue-green"  # type: ignore[index]
    with pytest.raises(StageFailed, match=r"asks for blue-green but k8s\.manifests rendered rolling"):
        DeployStage().run(ctx)
