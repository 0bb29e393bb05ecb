"""model.benchmark: prediction latency percentiles and throughput per batch size, checked against budgets.

Shared CI machines are noisy, so a budget is judged in ways that resist flaking: untimed warm-up
calls first; many timed rounds, read as percentiles rather than a single mean; the garbage
collector paused while timing; every measurement is `repeats` independent repeats, each with its
own CPU calibration time, and a figure is the median over repeats; the ratio rule compares the
median over repeats of p95 ÷ calibration with the same statistic of the accepted baseline; a
broken budget is measured a second time before the stage fails (`confirm`). The baseline is
recorded once and replaced only by an explicit `accept: true`: were every passing run recorded,
the reference would drift toward the luckiest, fastest run and identical runs would then fail.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed
from sluice.stages._accepted import read_accepted, write_accepted, write_strict_json
from sluice.stages._model import load_model
from sluice.stages._tables import input_path, read_table, sole_output, text_table

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
    "accept": "first",
    "repeats": 5,
}
REPEATED = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "rows_per_s")
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
    inputs = (Port("model", desc="a model directory from sklearn.train"), Port("table", desc="rows to predict"))
    outputs = (Port("report", desc="JSON latency and throughput", any_name=True, keep_on_failure=True),)

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
        write_strict_json(
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
                "accepted": _acceptance(config["accept"], accepted, passed),
            },
        )
        table = checks_table(checks) if checks else "(no budgets configured)"
        if not passed:
            raise StageFailed(f"prediction latency over budget in {len(attempts)} measurement(s)", table)
        if config["accept"] is True or (config["accept"] == "first" and accepted is None):
            write_accepted(ctx, attempts[-1])
        summary = ", ".join(f"batch {bs}: p50 {b['p50_ms']:.3g} ms" for bs, b in attempts[-1]["batches"].items())
        ctx.log.info("%s\n%s", summary, table)


def _acceptance(accept: bool | str, accepted: Mapping[str, Any] | None, passed: bool) -> str:
    if not passed:
        return "nothing recorded (failed)"
    if accept is True:
        return "replaced (accept: true)" if accepted is not None else "recorded (accept: true)"
    if accept == "first" and accepted is None:
        return "recorded (no baseline yet)"
    return "kept the existing baseline" if accepted is not None else "nothing recorded (accept: false)"


def checks_table(checks: Iterable[Check]) -> str:
    return text_table(
        ("batch", "measure", "limit", "measured", "verdict"),
        ((c.batch_size, c.measure, c.limit, c.measured, "pass" if c.passed else "FAIL") for c in checks),
    )


def draw_sample(features: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    rows = max(config["sample_rows"], max(config["batch_sizes"]))
    return features.sample(n=rows, replace=len(features) < rows, random_state=config["seed"]).reset_index(drop=True)


def measure(method: Callable[[Any], Any], sample: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, Any]:
    """`repeats` independent measurements; each figure is the median over them, the repeats kept for the ratio rule."""
    import numpy as np

    runs = [_measure_once(method, sample, config) for _ in range(config["repeats"])]
    batches = {}
    for size in runs[0]["batches"]:
        repeats = [{**run["batches"][size], "calibration_ms": run["calibration_ms"]} for run in runs]
        batches[size] = {key: float(np.median([r[key] for r in repeats])) for key in REPEATED} | {"repeats": repeats}
    return {"calibration_ms": float(np.median([run["calibration_ms"] for run in runs])), "batches": batches}


def _measure_once(method: Callable[[Any], Any], sample: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, Any]:
    """Latency percentiles (ms) and rows per second per batch size, with this repeat's calibration time."""
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
            ratio = _normalised_p95(stats, measured) / _normalised_p95(before, accepted)
            checks.append(Check(int(size), "p95_ratio", config["max_ratio"], ratio, ratio <= config["max_ratio"]))
    return checks


def _normalised_p95(stats: Mapping[str, Any], record: Mapping[str, Any]) -> float:
    """Median over repeats of p95 ÷ that repeat's calibration time (a record from before repeats: its one p95)."""
    import numpy as np

    repeats = stats.get("repeats") or [{"p95_ms": stats["p95_ms"], "calibration_ms": record["calibration_ms"]}]
    return float(np.median([r["p95_ms"] / r["calibration_ms"] for r in repeats]))
