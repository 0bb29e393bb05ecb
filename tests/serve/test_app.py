"""The serving app over real HTTP: predictions, validation errors, size limits, metrics, integrity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support.models import FEATURES

ROW = {"mean radius": 14.1, "mean texture": 19.3, "mean smoothness": 0.096, "worst area": 880.6, "worst concavity": 0.27}


def test_health_and_ready(server: str) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


def test_predictions_equal_offline(server: str, model_dir: Path, sample_table: Path) -> None:
    from sluice.stages.serving.model import load_model

    frame = pd.read_csv(sample_table)
    records = frame[FEATURES].to_dict(orient="records")
    response = httpx.post(f"{server}/predict", json=records)
    assert response.status_code == 200, response.text
    offline = load_model(model_dir).estimator.predict(frame[FEATURES]).tolist()
    assert response.json()["predictions"] == offline


@pytest.mark.parametrize(
    ("records", "loc", "fragment"),
    [
        ([{k: v for k, v in ROW.items() if k != "mean texture"}], ["body", 0, "mean texture"], "missing feature 'mean texture'"),
        ([{**ROW, "worst area": "big"}], ["body", 0, "worst area"], "must be a finite number, got string"),
        ([ROW, {**ROW, "mean radius": True}], ["body", 1, "mean radius"], "got boolean"),
        ([{**ROW, "colour": "red"}], ["body", 0, "colour"], "unknown feature 'colour'"),
        ([], ["body"], "the list of records is empty"),
        ({"rows": [ROW]}, ["body"], "expected a JSON list of records"),
    ],
    ids=["missing-feature", "wrong-type", "bool-for-number", "unknown-feature", "empty-list", "not-a-list"],
)
def test_bad_records_get_422_naming_the_field(server: str, records: object, loc: list, fragment: str) -> None:
    response = httpx.post(f"{server}/predict", json=records)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(d["loc"] == loc and fragment in d["msg"] for d in detail), detail


def test_invalid_json_is_422(server: str) -> None:
    response = httpx.post(f"{server}/predict", content=b"[{", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "invalid JSON" in response.json()["detail"][0]["msg"]


def test_ten_megabytes_of_json_is_refused(server: str) -> None:
    body = json.dumps([ROW] * 90_000).encode()
    assert len(body) > 10_000_000
    response = httpx.post(f"{server}/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "exceeds" in response.json()["detail"][0]["msg"]


def test_chunked_oversized_body_is_refused(server: str) -> None:
    # No Content-Length: the limit must hold while streaming too.
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b" " * 65536

    response = httpx.post(f"{server}/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_metrics_count_requests_classes_and_version(server: str, model_dir: Path) -> None:
    version = json.loads((model_dir / "metadata.json").read_text())["model_hash"]["value"][:12]
    httpx.post(f"{server}/predict", json=[ROW])
    text = httpx.get(f"{server}/metrics").text
    assert f'sluice_http_requests_total{{endpoint="/predict",method="POST",model_version="{version}",status="200"}}' in text
    assert f'sluice_http_request_duration_seconds_bucket{{endpoint="/predict",le="0.1",model_version="{version}"}}' in text
    assert 'sluice_predictions_total{class="' in text
    assert (
        f'sluice_model_info{{estimator="sklearn.linear_model.LogisticRegression",model_version="{version}",task="classification"}} 1.0'
        in text
    )


def test_tampered_model_is_refused(model_dir: Path, tmp_path: Path) -> None:
    from sluice.stages.serving.app import create_app
    from sluice.stages.serving.model import ModelIntegrityError

    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    with (bad / "model.joblib").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match=r"refusing to serve .* sha256 is"):
        create_app(bad)


def test_serve_command_exits_nonzero_on_tampered_model(model_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["model_hash"]["value"] = "0" * 64
    (bad / "metadata.json").write_text(json.dumps(meta))
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.stages.serving", str(bad), "--port", "1"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "refusing to serve" in proc.stderr


def test_not_a_model_directory(tmp_path: Path) -> None:
    from sluice.stages.serving.model import ModelError, load_model

    with pytest.raises(ModelError, match=r"metadata\.json is missing"):
        load_model(tmp_path)
