"""serve.smoke against a real server process: passing run, report contents, and each way it fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages.serve_smoke import SmokeStage
from tests.support.context import make_ctx
from tests.support.models import write_model_dir


def _run(tmp_path: Path, model: Path, table: Path, **config: object) -> dict:
    ctx = make_ctx(tmp_path, config, {"model": model, "data": table}, {"report": "smoke.json"}, stage="smoke")
    SmokeStage().run(ctx)
    return json.loads(ctx.outputs["report"].read_text())


def test_smoke_passes_and_reports(tmp_path: Path, model_dir: Path, sample_table: Path) -> None:
    report = _run(tmp_path, model_dir, sample_table, rows=20)
    assert report["passed"] is True
    assert report["rows"] == 20
    assert report["mismatches"] == []
    assert 0 < report["latency_ms"]["p95"] <= report["latency_budget_ms"]
    assert len(report["cases"]) == 20 and set(report["cases"][0]) == {"record", "prediction"}


def test_latency_over_budget_fails(tmp_path: Path, model_dir: Path, sample_table: Path) -> None:
    with pytest.raises(StageFailed, match=r"p95 latency .* exceeds the budget of 0\.001 ms"):
        _run(tmp_path, model_dir, sample_table, rows=5, latency_budget_ms=0.001)
    assert json.loads((tmp_path / "out" / "smoke.json").read_text())["passed"] is False


def test_a_swapped_model_is_refused_by_the_anchored_server_and_caught_online_without_it(
    tmp_path: Path, sample_table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server is handed another model after the offline predictions were made: what a stale or
    # wrong artefact looks like. serve.smoke starts it with the verified model's sha256, so it
    # refuses to start; without that digest, the online/offline comparison still catches it.
    model = write_model_dir(tmp_path / "m", c=1.0)
    other = write_model_dir(tmp_path / "other", c=1e-4)
    table = tmp_path / "t.csv"
    pd.read_csv(sample_table).to_csv(table, index=False)
    ctx = make_ctx(tmp_path, {"rows": 40}, {"model": model, "data": table}, {"report": "smoke.json"})
    import sluice.stages.serve_smoke as smoke

    real_server = smoke._Server

    class SwappedServer(real_server):  # type: ignore[misc,valid-type]
        def __init__(self, model_dir: Path, *args: object) -> None:
            super().__init__(other, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(smoke, "_Server", SwappedServer)
    with pytest.raises(StageFailed, match="exited with code 2 before it was ready") as refused:
        SmokeStage().run(ctx)
    assert "expected digest" in refused.value.details

    class UnanchoredSwappedServer(real_server):  # type: ignore[misc,valid-type]
        def __init__(self, model_dir: Path, startup_timeout: float, ctx: object, expected_sha256: str | None = None) -> None:
            super().__init__(other, startup_timeout, ctx, None)  # type: ignore[arg-type]

    monkeypatch.setattr(smoke, "_Server", UnanchoredSwappedServer)
    with pytest.raises(StageFailed, match="online predictions differ from offline ones") as info:
        SmokeStage().run(ctx)
    assert "online" in info.value.details


def test_tampered_model_fails_before_serving(tmp_path: Path, model_dir: Path, sample_table: Path) -> None:
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    (bad / "model.joblib").write_bytes((bad / "model.joblib").read_bytes()[:-1])
    with pytest.raises(StageFailed, match="refusing to serve"):
        _run(tmp_path, bad, sample_table)


def test_table_without_feature_columns(tmp_path: Path, model_dir: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(StageFailed, match="lacks feature columns: mean radius"):
        _run(tmp_path, model_dir, table)
