"""model.benchmark: prediction latency percentiles and throughput per batch size, checked against budgets.

Shared CI machines are noisy, so a budget is judged in ways that resist flaking: untimed warm-up
calls first; many timed rounds, read as percentiles rather than a single mean; the garbage
collector paused while timing; every measurement is `repeats` independent repeats, and a figure
is the median over repeats; a broken budget is measured a second time before the stage fails
(`confirm`). The ratio rule times the accepted baseline model (kept in the stage's state) and
the candidate in alternating calls in this process, so the same load hits both, and judges the
median of the per-call ratios; a baseline without a kept model falls back to comparing p95 ÷ a
CPU calibration time with its record. The baseline is recorded once and replaced only by an
explicit `accept: true`: were every passing run recorded, the reference would drift toward the
luckiest, fastest run and identical runs would then fail.
"""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed
from sluice.stages._accepted import read_accepted, write_accepted, write_strict_json
from sluice.stages._model import load_model
from sluice.stages._tables import input_anchor, input_path, read_table, sole_output, text_table

if TYPE_CHECKING:
    import numpy as np
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
KEPT_MODEL = "baseline-model-"  # + the model's short digest: the accepted model, timed beside the next candidates

Timed = tuple[Callable[[Any], Any], "pd.DataFrame"]  # a predict method and the sample it is timed on


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
        loaded = load_model(input_path(ctx, "model"), input_anchor(ctx, "model"))
        features = loaded.feature_frame(read_table(input_path(ctx, "table"), "benchmark"), "benchmark")
        method = getattr(loaded.model, config["method"], None)
        if method is None:
            raise StageFailed(f"the model has no {config['method']} method")
        sample = draw_sample(features, config)
        accepted = read_accepted(ctx)
        baseline, why = _baseline_model(ctx, accepted, config)
        timed: list[Timed] = [(method, sample)] + ([baseline] if baseline else [])
        attempts = [measure(timed, config)]
        checks = judge(attempts[-1], config, accepted)
        if config["confirm"] and not all(c.passed for c in checks):
            ctx.log.warning("a budget was broken; measuring again before failing")
            attempts.append(measure(timed, config))
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
                "interleaved": {"with_baseline_model": baseline is not None, "why": why},
                "accepted": _acceptance(config["accept"], accepted, passed),
            },
        )
        table = checks_table(checks) if checks else "(no budgets configured)"
        if not passed:
            raise StageFailed(f"prediction latency over budget in {len(attempts)} measurement(s)", table)
        if config["accept"] is True or (config["accept"] == "first" and accepted is None):
            write_accepted(ctx, {"calibration_ms": attempts[-1]["calibration_ms"], "batches": attempts[-1]["batches"], **_keep_model(ctx)})
        summary = ", ".join(f"batch {bs}: p50 {b['p50_ms']:.3g} ms" for bs, b in attempts[-1]["batches"].items())
        ctx.log.info("%s\n%s", summary, table)


def _keep_model(ctx: StageContext) -> dict[str, Any]:
    """Copies the accepted model into the state folder, named by its digest, so later runs can time it beside theirs."""
    from sluice.stages.serving.model import METADATA_FILE, read_metadata

    source = input_path(ctx, "model")
    metadata = read_metadata(source)
    name = KEPT_MODEL + metadata.model_hash[:16]
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    for old in ctx.state_dir.glob(KEPT_MODEL + "*"):
        shutil.rmtree(old)
    scratch = ctx.state_dir / f".{name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for file in (METADATA_FILE, metadata.model_file):
        (scratch / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / file, scratch / file)
    scratch.rename(ctx.state_dir / name)
    return {"model": {"sha256": metadata.model_hash, "dir": name}}


def _baseline_model(ctx: StageContext, accepted: Mapping[str, Any] | None, config: Mapping[str, Any]) -> tuple[Timed | None, str]:
    """The accepted model's predict method and sample, to time beside the candidate's, or why there is none."""
    if "max_ratio" not in config:
        return None, "no max_ratio: nothing is compared with the baseline"
    if accepted is None:
        return None, "no accepted baseline yet: this run's model becomes it if it passes"
    kept = accepted.get("model")
    if not isinstance(kept, dict) or not (ctx.state_dir / str(kept.get("dir"))).is_dir():
        return None, "the accepted baseline keeps no model (accept: true records one): compared with its recorded p95 ÷ calibration"
    from sluice.stages.serving.model import ModelError

    directory = ctx.state_dir / str(kept["dir"])
    try:
        # The state folder is ours, but a pickle is loaded only with its digest checked, in the bytes checked.
        loaded = load_model(directory, expected_sha256=str(kept["sha256"]))
        features = loaded.feature_frame(read_table(input_path(ctx, "table"), "benchmark"), "benchmark")
    except (ModelError, StageFailed) as exc:
        return None, f"the accepted model cannot be timed ({exc}): compared with its recorded p95 ÷ calibration"
    method = getattr(loaded.model, config["method"], None)
    if method is None:
        return None, f"the accepted model has no {config['method']} method: compared with its recorded p95 ÷ calibration"
    return (method, draw_sample(features, config)), ""


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


def measure(timed: Sequence[Timed], config: Mapping[str, Any]) -> dict[str, Any]:
    """`repeats` independent measurements; each figure is the median over them, the repeats kept for the ratio rule.

    With a second model (the accepted baseline), `paired` holds per batch size the median of the
    per-call ratios candidate ÷ baseline over every repeat, and the median over repeats of their p95 ratio.
    """
    import numpy as np

    runs = [_measure_once(timed, config) for _ in range(config["repeats"])]
    out: dict[str, Any] = {"calibration_ms": float(np.median([run["calibration_ms"] for run in runs])), "batches": _medians(runs, 0)}
    if len(timed) > 1:
        out["baseline_batches"] = _medians(runs, 1)
        out["paired"] = {
            size: {
                "median_ratio": float(np.median(np.concatenate([run["timings"][size][0] / run["timings"][size][1] for run in runs]))),
                "p95_ratio": float(np.median([run["batches"][0][size]["p95_ms"] / run["batches"][1][size]["p95_ms"] for run in runs])),
                "calls": int(sum(len(run["timings"][size][0]) for run in runs)),
            }
            for size in out["batches"]
        }
    return out


def _medians(runs: Sequence[Mapping[str, Any]], model: int) -> dict[str, Any]:
    import numpy as np

    batches = {}
    for size in runs[0]["batches"][model]:
        repeats = [{**run["batches"][model][size], "calibration_ms": run["calibration_ms"]} for run in runs]
        batches[size] = {key: float(np.median([r[key] for r in repeats])) for key in REPEATED} | {"repeats": repeats}
    return batches


def _measure_once(timed: Sequence[Timed], config: Mapping[str, Any]) -> dict[str, Any]:
    """Latency percentiles (ms) and rows per second per model and batch size, with this repeat's calibration time.

    Calls alternate between the models, the order swapped every round (ABBA), so load that comes
    and goes lands on both alike and neither is always the one called on a warm cache.
    """
    import numpy as np

    batches: list[dict[str, Any]] = [{} for _ in timed]
    timings: dict[str, np.ndarray] = {}
    for size in config["batch_sizes"]:
        chunks = [_chunks(sample, size) for _, sample in timed]
        for i in range(config["warmup"]):
            for (method, _), mine in zip(timed, chunks, strict=True):
                method(mine[i % len(mine)])
        times = np.empty((len(timed), config["rounds"]))
        gc.disable()  # a collection landing in one round would make a tail percentile out of nothing
        try:
            for i in range(config["rounds"]):
                for j in range(len(timed)) if i % 2 == 0 else reversed(range(len(timed))):
                    chunk = chunks[j][i % len(chunks[j])]
                    started = time.perf_counter()
                    timed[j][0](chunk)
                    times[j, i] = time.perf_counter() - started
        finally:
            gc.enable()
        for j, row in enumerate(times):
            batches[j][str(size)] = _stats(row, size)
        timings[str(size)] = times
    return {"calibration_ms": calibration_ms(), "batches": batches, "timings": timings}


def _chunks(sample: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    starts = range(0, len(sample) - size + 1, size) or range(1)
    return [sample.iloc[s : s + size] for s in starts]


def _stats(timings: np.ndarray, size: int) -> dict[str, float]:
    import numpy as np

    p50, p95, p99 = np.percentile(timings, [50, 95, 99]) * 1000.0
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(timings.mean() * 1000.0),
        "rows_per_s": float(size * len(timings) / timings.sum()),
    }


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
    if "max_ratio" in config and "paired" in measured:
        for size, paired in measured["paired"].items():
            ratio = paired["median_ratio"]
            checks.append(Check(int(size), "paired_ratio", config["max_ratio"], ratio, ratio <= config["max_ratio"]))
    elif "max_ratio" in config and accepted is not None:
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
