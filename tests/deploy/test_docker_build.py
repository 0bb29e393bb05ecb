"""docker.build against a real Docker engine: the image runs as non-root, answers like the model, and failures are clean."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages.docker_build import DockerBuildStage
from tests.support.context import make_ctx
from tests.support.models import FEATURES
from tests.support.servers import free_port

pytestmark = pytest.mark.docker  # the no-daemon test needs no engine, but lives with its siblings


@pytest.fixture(scope="module")
def built(docker_engine: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    ws = tmp_path_factory.mktemp("build")
    config = {"base_image": docker_engine, "wheelhouse": True, "network_mode": "host", "repository": "sluice-test/serving", "version": "t1"}
    ctx = make_ctx(ws, config, {"model": model_dir}, {"image": "image.json", "context": "context"}, pipeline="breast-cancer")
    DockerBuildStage().run(ctx)
    record = json.loads(ctx.outputs["image"].read_text())
    record["context_dir"] = str(ctx.outputs["context"])
    return record


def test_record_names_the_exact_image(built: dict, model_dir: Path) -> None:
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert built["image_id"].startswith("sha256:")
    assert built["reference"] == f"sluice-test/serving:t1-{meta['model_hash']['value'][:12]}"
    assert built["tags"][1] == "sluice-test/serving:t1"
    assert f"scikit-learn=={meta['library_versions']['scikit-learn']}" in built["requirements"]


def test_the_image_carries_the_verified_bytes_and_digest(built: dict, model_dir: Path) -> None:
    """What reaches the image is the bytes that were checked, and the server insists on their digest."""
    digest = hashlib.sha256((model_dir / "model.joblib").read_bytes()).hexdigest()
    context = Path(built["context_dir"])
    assert built["model_hash"] == digest
    assert hashlib.sha256((context / "srv" / "model" / "model.joblib").read_bytes()).hexdigest() == digest
    dockerfile = (context / "Dockerfile").read_text()
    assert f'"dev.sluice.model.sha256"="{digest}"' in dockerfile
    # The server in the image checks the bytes against the digest baked into it, not metadata.json.
    assert f'ENTRYPOINT ["python3", "-m", "serving", "/srv/model", "--expect-sha256", "{digest}"]' in dockerfile


def test_image_is_non_root_with_healthcheck(built: dict) -> None:
    import docker

    attrs = docker.from_env().images.get(built["image_id"]).attrs["Config"]
    assert attrs["User"] == "10001:10001"
    assert "/health" in " ".join(attrs["Healthcheck"]["Test"])
    assert "8000/tcp" in attrs["ExposedPorts"]
    assert attrs["Labels"]["dev.sluice.model.sha256"] == built["model_hash"]
    dockerfile = (Path(built["context_dir"]) / "Dockerfile").read_text()
    assert "--no-index --find-links /tmp/wheels" in dockerfile


def test_the_image_installs_only_hashed_wheels(built: dict) -> None:
    context = Path(built["context_dir"])
    lines = (context / "requirements.txt").read_text().splitlines()
    wheels = list((context / "wheels").glob("*.whl"))
    assert lines and len(lines) == len({w.name.split("-")[0] for w in wheels})
    assert all(re.fullmatch(r"[A-Za-z0-9_.]+==[^ ]+( --hash=sha256:[0-9a-f]{64})+", line) for line in lines), lines
    assert "--no-index --find-links /tmp/wheels --require-hashes" in (context / "Dockerfile").read_text()
    assert built["base_image_pinned"] == built["base_image"]  # built locally by docker import: no registry digest


def test_container_serves_the_model(built: dict, model_dir: Path, sample_table: Path) -> None:
    import docker
    import pandas as pd

    from sluice.stages.serving.model import load_model

    port = free_port()
    container = docker.from_env().containers.run(
        built["reference"], ["--host", "127.0.0.1", "--port", str(port)], network_mode="host", detach=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            container.reload()
            assert container.status != "exited", container.logs().decode()[-2000:]
            assert time.monotonic() < deadline, "container never became ready"
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        frame = pd.read_csv(sample_table)[FEATURES]
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json=frame.to_dict(orient="records"))
        assert response.status_code == 200
        assert response.json()["predictions"] == load_model(model_dir).estimator.predict(frame).tolist()
    finally:
        container.remove(force=True)


def test_failed_build_shows_log_tail(docker_engine: str, model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    meta = json.loads((model / "metadata.json").read_text())
    meta["library_versions"]["python"] = "3.99.0"
    (model / "metadata.json").write_text(json.dumps(meta))
    ctx = make_ctx(tmp_path, {"base_image": docker_engine, "network_mode": "host"}, {"model": model}, {"image": "image.json"})
    with pytest.raises(StageFailed, match=r"docker build of sluice/test:dev-.* failed") as info:
        DockerBuildStage().run(ctx)
    assert "base image has Python 3.11, the model was trained with 3.99" in info.value.details
    assert "Step 2/" in info.value.details


def test_no_daemon_names_docker_host(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    ctx = make_ctx(tmp_path, {}, {"model": model_dir}, {"image": "image.json"})
    with pytest.raises(StageFailed, match=f"no Docker daemon reachable at DOCKER_HOST=unix://{tmp_path}/no-such-docker.sock"):
        DockerBuildStage().run(ctx)
    problems = list(DockerBuildStage().preflight({}))
    assert problems and "DOCKER_HOST" in problems[0].message
