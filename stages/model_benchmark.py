"""model.benchmark: prediction latency percentiles and throughput per batch size, checked against budgets.

Shared CI machines are noisy, so a budget is judged in ways that resist flaking: untimed warm-up
calls first; many timed rounds, read as percentiles rather than a single mean; the garbage
collector paused while timing; the ratio rule compares medians after dividing each run by a CPU
calibration time measured alongside it (a slower or busier machine slows both); and a broken
budget is measured a second time before the stage fails (`confirm`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import schemas
from engine.plugin import ConfigProblem, Plugin, StageContext, StageFailed, write_json
from stages._accepted import read_accepted, write_accepted
from stages._model import load_model
from stages._tables import input_path, read_table, sole_output, text_table

if TYPE_CHECKING:
    import pandas as pd

DEFAULTS: Mapping[str, Any] = {
    "batch_sizes": [1, 32, 256],
    "sample_rows": 1000,
    "seed": 0,
    "warmup": 5,
    "rounds": 50,
    "method": "predict",
    "confirm": True,
    "accept": True,
}
LATENCY_BUDGETS = ("p50_ms", "p95_ms", "p99_ms")
CALIBRATION_ROWS = 200_000  # a sort of this many floats takes a few ms: long enough to time, short enough to repeat


@dataclass(frozen=True)
class Check:
    batch_size: int
    measure: str  # "p95_ms", "min_rows_per_s", "p50_ratio", …
    limit: float
    measured: float
    passed: bool


class BenchmarkStage(Plugin):
    name = "model.benchmark"
    version = "1"
    config_schema = schemas.load("stages/model.benchmark")

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        sizes = config.get("batch_sizes", DEFAULTS["batch_sizes"])
        for i, budget in enumerate(config.get("budgets", ())):
            if budget["batch_size"] not in sizes:
                yield ConfigProblem(f"batch size {budget['batch_size']} is not in batch_sizes {sizes}", ("budgets", i, "batch_size"))

    def run(self, ctx: StageContext) -> None:
        config = {**DEFAULTS, **ctx.config}
        loaded = load_model(input_path(ctx, "model"))
        features = loaded.feature_frame(read_table(input_path(ctx, "table"), "benchmark"), "benchmark")
        method = getattr(loaded.model, config["method"], None)
        if method is None:
            raise StageFailed(f"the model has no {config['method']} method")
        sample = draw_sample(features, config)
        accepted = read_accepted(ctx)
        attempts = [measure(method, sample, config)]
        checks = judge(attempts[-1], config, accepted)
        if config["confirm"] and not all(c.passed for c in checks):
            ctx.log.warning("a budget was broken; measuring again before failing")
            attempts.append(measure(method, sample, config))
            checks = judge(attempts[-1], config, accepted)
        passed = all(c.passed for c in checks)
        write_json(
            sole_output(ctx, "report"),
            {
                "passed": passed,
                "method": config["method"],
                "rounds": config["rounds"],
                "warmup": config["warmup"],
                "sample_rows": len(sample),
                "attempts": attempts,
                "checks": [asdict(c) for c in checks],
                "compared_with_accepted": accepted is not None,
            },
        )
        table = checks_table(checks) if checks else "(no budgets configured)"
        if not passed:
            raise StageFailed(f"prediction latency over budget in {len(attempts)} measurement(s)", table)
        if config["accept"]:
            write_accepted(ctx, attempts[-1])
        summary = ", ".join(f"batch {bs}: p50 {b['p50_ms']:.3g} ms" for bs, b in attempts[-1]["batches"].items())
        ctx.log.info("%s\n%s", summary, table)


def checks_table(checks: Iterable[Check]) -> str:
    return text_table(
        ("batch", "measure", "limit", "measured", "verdict"),
        ((c.batch_size, c.measure, c.limit, c.measured, "pass" if c.passed else "FAIL") for c in checks),
    )


def draw_sample(features: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    rows = max(config["sample_rows"], max(config["batch_sizes"]))
    return features.sample(n=rows, replace=len(features) < rows, random_state=config["seed"]).reset_index(drop=True)


def measure(method: Callable[[Any], Any], sample: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, Any]:
    """Latency percentiles (ms) and rows per second per batch size, with this run's calibration time."""
    import numpy as np

    batches = {}
    for size in config["batch_sizes"]:
        starts = range(0, len(sample) - size + 1, size) or range(1)
        chunks = [sample.iloc[s : s + size] for s in starts]
        for i in range(config["warmup"]):
            method(chunks[i % len(chunks)])
        timings = np.empty(config["rounds"])
        gc.disable()  # a collection landing in one round would make a tail percentile out of nothing
        try:
            for i in range(config["rounds"]):
                chunk = chunks[i % len(chunks)]
                started = time.perf_counter()
                method(chunk)
                timings[i] = time.perf_counter() - started
        finally:
            gc.enable()
        p50, p95, p99 = np.percentile(timings, [50, 95, 99]) * 1000.0
        batches[str(size)] = {
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "mean_ms": float(timings.mean() * 1000.0),
            "rows_per_s": float(size * len(timings) / timings.sum()),
        }
    return {"calibration_ms": calibration_ms(), "batches": batches}


def calibration_ms() -> float:
    """Median time of a fixed CPU-bound job: how fast this machine is right now."""
    import numpy as np

    data = np.random.default_rng(0).random(CALIBRATION_ROWS)
    times = []
    for _ in range(7):
        started = time.perf_counter()
        np.sort(data)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000.0)


def judge(measured: Mapping[str, Any], config: Mapping[str, Any], accepted: Mapping[str, Any] | None) -> list[Check]:
    checks = []
    for budget in config.get("budgets", ()):
        size = budget["batch_size"]
        stats = measured["batches"][str(size)]
        for key in LATENCY_BUDGETS:
            if key in budget:
                checks.append(Check(size, key, budget[key], stats[key], stats[key] <= budget[key]))
        if "min_rows_per_s" in budget:
            limit = budget["min_rows_per_s"]
            checks.append(Check(size, "min_rows_per_s", limit, stats["rows_per_s"], stats["rows_per_s"] >= limit))
    if "max_ratio" in config and accepted is not None:
        for size, stats in measured["batches"].items():
            before = accepted.get("batches", {}).get(size)
            if before is None:
                continue
            ratio = (stats["p50_ms"] / measured["calibration_ms"]) / (before["p50_ms"] / accepted["calibration_ms"])
            checks.append(Check(int(size), "p50_ratio", config["max_ratio"], ratio, ratio <= config["max_ratio"]))
    return checks
