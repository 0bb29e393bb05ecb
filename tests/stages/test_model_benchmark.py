"""model.benchmark: report shape, absolute and ratio budgets, confirmation; no assertion depends on speed."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from sluice.engine.plugin import StageFailed
from sluice.stages._accepted import write_accepted
from sluice.stages.model_benchmark import BenchmarkStage, judge
from tests.stages.conftest import config_problems

PLUGIN = BenchmarkStage()
FAST = {"batch_sizes": [1, 8], "rounds": 5, "warmup": 1, "sample_rows": 20, "repeats": 3}
IMPOSSIBLE = 1e-9  # ms: no call is this fast
GENEROUS = 1e9


def _run(harness, cancer_model, config, table=None):  # type: ignore[no-untyped-def]
    ctx = harness.context(
        {**FAST, **config}, {"model": cancer_model["model"], "table": table or cancer_model["test"]}, {"report": "bench.json"}
    )
    assert not config_problems(PLUGIN, ctx.config)
    try:
        PLUGIN.run(ctx)
    finally:
        report = json.loads(ctx.outputs["report"].read_text()) if ctx.outputs["report"].exists() else None
    return report, ctx


def test_report_and_accepted_record(harness, cancer_model):
    report, _ = _run(harness, cancer_model, {"budgets": [{"batch_size": 1, "p99_ms": GENEROUS, "min_rows_per_s": 1e-6}]})
    assert report["passed"] and len(report["attempts"]) == 1
    batches = report["attempts"][0]["batches"]
    assert set(batches) == {"1", "8"}
    for stats in batches.values():
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] and stats["rows_per_s"] > 0
    assert report["attempts"][0]["calibration_ms"] > 0
    accepted = json.loads((harness.state_dir / "accepted.json").read_text())
    kept = accepted.pop("model")
    assert accepted == report["attempts"][0]
    assert (harness.state_dir / kept["dir"] / "model.joblib").is_file() and kept["dir"] == f"baseline-model-{kept['sha256'][:16]}"


@pytest.mark.parametrize("budget", [{"p50_ms": IMPOSSIBLE}, {"p95_ms": IMPOSSIBLE}, {"p99_ms": IMPOSSIBLE}, {"min_rows_per_s": GENEROUS}])
def test_broken_budget_is_measured_twice_then_fails(harness, cancer_model, budget):
    with pytest.raises(StageFailed, match="over budget in 2 measurement") as failure:
        _run(harness, cancer_model, {"budgets": [{"batch_size": 8, **budget}]})
    assert "FAIL" in failure.value.details and next(iter(budget)) in failure.value.details
    assert not (harness.state_dir / "accepted.json").exists()


def test_without_confirm_one_measurement_decides(harness, cancer_model):
    with pytest.raises(StageFailed, match="in 1 measurement"):
        _run(harness, cancer_model, {"confirm": False, "budgets": [{"batch_size": 1, "p50_ms": IMPOSSIBLE}]})


def test_ratio_to_the_last_accepted_run(harness, cancer_model):
    def accept(p50_ms: float) -> None:
        ctx = harness.context({}, {}, {})
        write_accepted(ctx, {"calibration_ms": 1.0, "batches": {"1": {"p95_ms": p50_ms}, "8": {"p95_ms": p50_ms}}})

    accept(GENEROUS)  # the last accepted run was very slow: anything now is faster
    report, _ = _run(harness, cancer_model, {"max_ratio": 1.5})
    assert [c["measure"] for c in report["checks"]] == ["p95_ratio", "p95_ratio"] and report["passed"]
    accept(IMPOSSIBLE)
    with pytest.raises(StageFailed, match="over budget"):
        _run(harness, cancer_model, {"max_ratio": 1.5})


def test_ratio_divides_out_the_calibration():
    measured = {"calibration_ms": 20.0, "batches": {"1": {"p95_ms": 2.0}}}
    accepted = {"calibration_ms": 10.0, "batches": {"1": {"p95_ms": 1.0}}}
    (check,) = judge(measured, {"max_ratio": 1.2}, accepted)
    assert check.measured == 1.0 and check.passed  # twice as slow on a machine twice as slow


def test_predict_proba_and_a_tiny_table_sampled_with_replacement(harness, cancer_model, tmp_path):
    pd.read_csv(cancer_model["test"]).iloc[:3].to_csv(tmp_path / "t.csv", index=False)
    report, _ = _run(harness, cancer_model, {"method": "predict_proba", "batch_sizes": [16]}, tmp_path / "t.csv")
    assert report["sample_rows"] == 20 and report["method"] == "predict_proba"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"budgets": [{"batch_size": 64, "p95_ms": 5}]}, "batch size 64 is not in batch_sizes [1, 32, 256]"),
        ({"budgets": [{"batch_size": 1}]}, "does not have enough properties"),
        ({"rounds": 1}, "less than the minimum"),
        ({"max_ratio": 0.9}, "less than or equal to the minimum"),
        ({"method": "transform"}, "is not one of"),
    ],
)
def test_bad_config(config, message):
    problems = config_problems(PLUGIN, config)
    assert any(message in p for p in problems), problems


def test_missing_feature_column(harness, cancer_model, tmp_path):
    pd.read_csv(cancer_model["test"]).drop(columns="worst area").to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageFailed, match="benchmark table lacks 1 required column"):
        _run(harness, cancer_model, {}, tmp_path / "t.csv")


def test_empty_table(harness, cancer_model, tmp_path):
    pd.read_csv(cancer_model["test"]).iloc[:0].to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageFailed, match="has no rows"):
        _run(harness, cancer_model, {}, tmp_path / "t.csv")


def _record(p95_per_calibration: list[float]) -> dict:
    """A measurement whose repeats have these p95 ÷ calibration values (calibration 1 ms)."""
    repeats = [{"p50_ms": v / 2, "p95_ms": v, "calibration_ms": 1.0} for v in p95_per_calibration]
    return {"calibration_ms": 1.0, "batches": {"1": {"p95_ms": float(np.median(p95_per_calibration)), "repeats": repeats}}}


def test_ratio_compares_medians_of_repeats_not_a_lucky_run():
    """One lucky repeat in the baseline (0.3) does not move the reference; a 1.4× slower run passes 1.5."""
    accepted = _record([1.0, 1.02, 0.3, 0.98, 1.0])
    (check,) = judge(_record([1.4, 1.41, 1.39, 2.5, 1.4]), {"max_ratio": 1.5}, accepted)
    assert check.measure == "p95_ratio" and check.measured == pytest.approx(1.4) and check.passed
    (check,) = judge(_record([1.6, 1.61, 1.59, 1.6, 1.0]), {"max_ratio": 1.5}, accepted)
    assert not check.passed


def test_a_passing_run_does_not_replace_the_accepted_baseline(harness, cancer_model):
    """Only the first run, or an explicit accept: true, records a baseline: no ratchet toward the fastest run."""
    report, _ = _run(harness, cancer_model, {"max_ratio": 1e6})
    first = (harness.state_dir / "accepted.json").read_text()
    assert report["accepted"] == "recorded (no baseline yet)"
    report, _ = _run(harness, cancer_model, {"max_ratio": 1e6})
    assert (harness.state_dir / "accepted.json").read_text() == first and report["accepted"] == "kept the existing baseline"
    report, _ = _run(harness, cancer_model, {"max_ratio": 1e6, "accept": True})
    assert (harness.state_dir / "accepted.json").read_text() != first and report["accepted"] == "replaced (accept: true)"
    assert len(report["attempts"][0]["batches"]["1"]["repeats"]) == 3


# The ratio rule against the kept baseline model, timed in alternating calls. A model whose predict
# sleeps a fixed time per call slows down deterministically: the tests assert decisions, not times.

SLEEP_S = 0.002
RATIO = {**FAST, "batch_sizes": [4], "max_ratio": 1.3}


class Sleepy:
    """A 'model' whose predict takes `seconds` per call (sleeping, so the share of CPU it gets does not matter)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict(self, X):  # type: ignore[no-untyped-def]
        time.sleep(self.seconds)
        return np.zeros(len(X))


def _sleepy(root: Path, seconds: float) -> Path:
    """A model directory as sklearn.train writes one, holding a Sleepy."""
    root.mkdir(parents=True, exist_ok=True)
    joblib.dump(Sleepy(seconds), root / "model.joblib")
    digest = hashlib.sha256((root / "model.joblib").read_bytes()).hexdigest()
    features = [{"name": "x", "dtype": "float64"}]
    metadata = {"format": 1, "task": "regression", "features": features, "model_hash": {"algorithm": "sha256", "value": digest}}
    (root / "metadata.json").write_text(json.dumps(metadata))
    return root


def _sleepy_run(harness, tmp_path, seconds, config=RATIO):  # type: ignore[no-untyped-def]
    table = tmp_path / "x.csv"
    if not table.exists():
        pd.DataFrame({"x": np.arange(20.0)}).to_csv(table, index=False)
    model = _sleepy(tmp_path / f"model-{seconds}", seconds)
    ctx = harness.context(config, {"model": model, "table": table}, {"report": "bench.json"})
    assert not config_problems(PLUGIN, ctx.config)
    try:
        PLUGIN.run(ctx)
        failed = None
    except StageFailed as exc:
        failed = exc
    return json.loads(ctx.outputs["report"].read_text()), failed


def test_ratio_times_the_kept_baseline_model_beside_the_candidate(harness, tmp_path):
    first, failed = _sleepy_run(harness, tmp_path, SLEEP_S)
    assert failed is None and first["interleaved"] == {"with_baseline_model": False, "why": first["interleaved"]["why"]}
    assert "no accepted baseline yet" in first["interleaved"]["why"]
    report, failed = _sleepy_run(harness, tmp_path, SLEEP_S)
    assert failed is None and report["interleaved"]["with_baseline_model"]
    (check,) = report["checks"]
    assert check["measure"] == "paired_ratio" and check["passed"]
    paired = report["attempts"][0]["paired"]["4"]
    assert paired["calls"] == FAST["rounds"] * FAST["repeats"] and set(report["attempts"][0]["baseline_batches"]) == {"4"}


def test_a_model_half_as_slow_again_fails_after_a_confirmation_run(harness, tmp_path):
    _sleepy_run(harness, tmp_path, SLEEP_S)
    report, failed = _sleepy_run(harness, tmp_path, 1.5 * SLEEP_S)
    assert failed is not None and "over budget in 2 measurement(s)" in str(failed) and "paired_ratio" in failed.details
    assert [c["measure"] for c in report["checks"]] == ["paired_ratio"] and not report["passed"]
    assert report["accepted"] == "nothing recorded (failed)"


def test_error_rates_on_seeded_trials(harness, tmp_path):
    """A fast version of gates_bench's benchmark trials: identical models pass, a +50 % model fails, counted over runs."""
    assert _sleepy_run(harness, tmp_path, SLEEP_S)[1] is None
    outcomes: dict[float, list[bool]] = {1.0: [], 1.5: []}
    for factor, passed in outcomes.items():
        for _ in range(4):
            report, failed = _sleepy_run(harness, tmp_path, factor * SLEEP_S)
            assert {c["measure"] for c in report["checks"]} == {"paired_ratio"}
            passed.append(failed is None)
    assert sum(outcomes[1.0]) >= 3, outcomes  # at most one false alarm in four identical runs
    assert sum(outcomes[1.5]) <= 1, outcomes  # at least three of four slow-downs caught


def test_a_baseline_without_a_kept_model_is_compared_with_its_record_and_says_so(harness, tmp_path):
    write_accepted(harness.context({}, {}, {}), {"calibration_ms": 1.0, "batches": {"4": {"p95_ms": GENEROUS}}})
    report, failed = _sleepy_run(harness, tmp_path, SLEEP_S)
    assert failed is None and [c["measure"] for c in report["checks"]] == ["p95_ratio"]
    assert "keeps no model" in report["interleaved"]["why"]


def test_a_tampered_kept_model_is_not_loaded(harness, tmp_path):
    _sleepy_run(harness, tmp_path, SLEEP_S)
    kept = json.loads((harness.state_dir / "accepted.json").read_text())["model"]
    joblib.dump(Sleepy(0.0), harness.state_dir / kept["dir"] / "model.joblib")
    report, _ = _sleepy_run(harness, tmp_path, SLEEP_S)
    assert not report["interleaved"]["with_baseline_model"] and "cannot be timed" in report["interleaved"]["why"]
    assert "sha256" in report["interleaved"]["why"]
