"""False-alarm and detection rates of model.gate and model.benchmark, from seeded random trials (issue 10).

model.gate, breast cancer, 143 test rows per trial (a fresh stratified split each trial):
  equal      the baseline and the candidate are random forests (100 trees) differing only in seed;
  k× tol.    the candidate's class probabilities are swapped on a random share of rows chosen so its
             expected accuracy is k × 0.02 below the baseline's (k = 1, 3, 5).
Each is gated by `accuracy: {max_drop: 0.02}` and by the docs' three rules (accuracy, roc_auc
max_drop 0.01, log_loss max_drop 0.05), on the point estimate and with `bootstrap` (1,000
resamples) under each `decision` (regression, non_inferiority). The gate runs as `sluice run`
runs it: a first run accepts the baseline, the second judges the candidate.

model.benchmark, `max_ratio: 1.3`, a logistic regression: `runs` identical runs in a row (false
alarms), and runs of a model made 50 % slower after the baseline was accepted (detection);
`--burn N` keeps N CPU-burning processes running meanwhile, to measure under load.

data.drift, defaults (BH, alpha 0.05): random halves of breast_cancer, wine, diabetes and digits
(false alarm = any column flagged), and synthetic tables of `--drift-rows` rows a side with normal,
uniform, t(3), bimodal, exponential and Poisson(3) columns, a categorical and an integer one: no
change (false alarm), then one current table holding every change at once, one column each: a
0.2-sd shift per shape, spread ×1.5, 0 → 30 % missing, 8 % of rows in unseen categories, and a
negligible +0.01-sd shift of the integer column (which should not be flagged).

    python benchmarks/gates_bench.py [--trials 60] [--runs 20] [--old-gates DIR] [--only drift|gate|benchmark]
                                     [--burn 2] [--drift-trials 20] [--drift-rows 200000]

`--old-gates DIR` also measures older copies of the stages: DIR holds a package `oldgates`
with any of `model_gate.py`, `model_benchmark.py` and `data_drift.py` (e.g. from
`git show REV:stages/...`; a copy must still import against today's helpers), so before/after
figures come from the same trials. The paired gate's figures before `decision` existed are
the `non_inferiority` rows: that was its only rule.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sluice.engine.plugin import Plugin, StageContext, StageFailed

TOLERANCE = 0.02
RULE_SETS = {
    "accuracy": {"accuracy": {"max_drop": TOLERANCE}},
    "docs rules": {"accuracy": {"max_drop": TOLERANCE}, "roc_auc": {"max_drop": 0.01}, "log_loss": {"max_drop": 0.05}},
}
VARIANTS = (0, 1, 3, 5)  # regression size in multiples of the tolerance; 0 = equal models
# How the drop rules decide: the point estimate (no bootstrap), or a bootstrap with this `decision`.
MODES = ("point", "regression", "non_inferiority")


def _context(root: Path, config: dict[str, Any], inputs: dict[str, Path], outputs: dict[str, str]) -> StageContext:
    return StageContext(
        stage="bench",
        config=config,
        inputs=inputs,
        outputs={k: root / "out" / v for k, v in outputs.items()},
        params={},
        workspace=root,
        state_dir=root / "state",
        log=logging.getLogger("gates_bench"),
    )


def _passes(plugin: Plugin, ctx: StageContext) -> bool:
    try:
        plugin.run(ctx)
    except StageFailed:
        return False
    return True


def _evaluated(root: Path, name: str, y: np.ndarray, proba: np.ndarray) -> dict[str, Path]:
    """What sklearn.evaluate writes for these probabilities: metrics and per-row predictions."""
    from sluice.stages._metrics import metric

    pred = proba.argmax(axis=1)
    metrics = {m: metric(m, y, pred, proba, [0, 1]) for m in ("accuracy", "roc_auc", "log_loss")}
    (root / f"{name}.json").write_text(json.dumps(metrics))
    table = pd.DataFrame(
        {"row_key": [f"r{i}" for i in range(len(y))], "y_true": y, "y_pred": pred, "proba_0": proba[:, 0], "proba_1": proba[:, 1]}
    )
    table.to_csv(root / f"{name}.csv", index=False)
    return {"metrics": root / f"{name}.json", "predictions": root / f"{name}.csv"}


def _gate_verdict(
    plugin: Plugin, root: Path, rules: dict[str, Any], mode: str, base: dict[str, Path], cand: dict[str, Path], paired: bool
) -> bool:
    """True when the candidate passes. Paired: accept the baseline first; else a committed baseline file."""
    config: dict[str, Any] = {"rules": rules}
    if mode != "point":
        config.update(bootstrap={"resamples": 1000, "seed": 0}, decision=mode)
    state = root / "state"
    for old in state.glob("*"):
        old.unlink()
    if paired:
        assert _passes(plugin, _context(root, {**config, "accept": True}, base, {"report": "r.json"}))
        return _passes(plugin, _context(root, {**config, "baseline": "accepted"}, cand, {"report": "r.json"}))
    return _passes(
        plugin, _context(root, {**config, "baseline": "file", "accept": False}, {**cand, "baseline": base["metrics"]}, {"report": "r.json"})
    )


def gate_trials(trials: int, gates: dict[str, tuple[Plugin, bool]]) -> dict[tuple[str, str, str, int], float]:
    """Share of trials failed, per (gate, rule set, mode, variant)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    failed: dict[tuple[str, str, str, int], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "state").mkdir()
        for t in range(trials):
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=t, stratify=y)
            base_p = RandomForestClassifier(100, random_state=2 * t).fit(X_train, y_train).predict_proba(X_test)
            cand_p = RandomForestClassifier(100, random_state=2 * t + 1).fit(X_train, y_train).predict_proba(X_test)
            accuracy = float((base_p.argmax(1) == y_test).mean())
            base = _evaluated(root, "base", y_test, base_p)
            rng = np.random.default_rng(1000 + t)
            for k in VARIANTS:
                # Swapping probabilities on a share q of rows costs q × (2·accuracy − 1) in expected accuracy.
                q = k * TOLERANCE / max(2 * accuracy - 1, 1e-9)
                swap = rng.random(len(y_test)) < q
                cand = _evaluated(root, "cand", y_test, np.where(swap[:, None], cand_p[:, ::-1], cand_p))
                for gate, (plugin, paired) in gates.items():
                    for rule_name, rules in RULE_SETS.items():
                        for mode in MODES:
                            key = (gate, rule_name, mode, k)
                            failed[key] = failed.get(key, 0) + (not _gate_verdict(plugin, root, rules, mode, base, cand, paired))
    return {key: n / trials for key, n in failed.items()}


class _Slowed:
    """A fitted model whose predict takes `factor` times as long (busy-waiting, like real work)."""

    def __init__(self, model: Any, factor: float):
        self.model, self.factor = model, factor

    def predict(self, X: Any) -> Any:
        started = time.perf_counter()
        out = self.model.predict(X)
        until = started + (time.perf_counter() - started) * self.factor
        while time.perf_counter() < until:
            pass
        return out


@functools.cache
def _fitted() -> tuple[pd.DataFrame, Any]:
    """Breast cancer and a logistic regression fitted on it once (the fit takes seconds on a busy machine)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    frame = load_breast_cancer(as_frame=True).frame
    return frame, LogisticRegression(max_iter=5000).fit(frame.drop(columns="target"), frame["target"])


def benchmark_runs(module: types.ModuleType, runs: int, factor_after_first: float, config: dict[str, Any]) -> float:
    """Share of runs after the first (which records the baseline) that fail.

    The model input is a real model directory (the stage keeps a copy of the accepted one); the
    stage's `load_model` is swapped so the input serves the slowed model and the kept copy the original.
    """
    import hashlib

    import joblib

    from sluice.stages._model import LoadedModel

    frame, model = _fitted()
    features = frame.drop(columns="target")
    metadata = {"features": [{"name": c, "dtype": "float64"} for c in features.columns], "task": "classification", "format": 1}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame.to_csv(root / "table.csv", index=False)
        (root / "model").mkdir()
        joblib.dump(model, root / "model" / "model.joblib")
        digest = hashlib.sha256((root / "model" / "model.joblib").read_bytes()).hexdigest()
        (root / "model" / "metadata.json").write_text(json.dumps({**metadata, "model_hash": {"algorithm": "sha256", "value": digest}}))
        for i in range(runs + 1):
            served = _Slowed(model, 1.0 if i == 0 else factor_after_first)
            module.load_model = lambda path, m=served: LoadedModel(model if "state" in Path(path).parts else m, metadata)
            ok = _passes(
                module.BenchmarkStage(),
                _context(root, config, {"model": root / "model", "table": root / "table.csv"}, {"report": "b.json"}),
            )
            if i == 0:
                assert ok, "the first run records the baseline and must pass"
            else:
                failed += not ok
    return failed / runs


def _burn() -> None:
    while True:
        pass


SHAPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(size=n),
    "uniform": lambda rng, n: rng.uniform(size=n),
    "t": lambda rng, n: rng.standard_t(3, size=n),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.5, rng.normal(-2, 0.5, n), rng.normal(2, 0.5, n)),
    "skewed": lambda rng, n: rng.exponential(size=n),
    "count": lambda rng, n: rng.poisson(3, size=n).astype(float),
}
CHANGES = [f"0.2 sd shift, {shape}" for shape in SHAPES] + [
    "spread x1.5, normal",
    "0 -> 30 % missing",
    "8 % unseen categories",
    "+0.01 sd, integer (negligible)",
]


def _synthetic(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    frame = pd.DataFrame({shape: draw(rng, rows) for shape, draw in SHAPES.items()})
    frame["spread"] = rng.normal(size=rows)
    frame["missing"] = rng.normal(size=rows)
    frame["cat"] = rng.choice(list("abcdefghij"), rows)
    frame["int"] = rng.poisson(3, rows).astype(float)
    return frame


def _changed(current: pd.DataFrame, reference: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    out = current.copy()
    for shape in SHAPES:
        out[shape] += 0.2 * reference[shape].std()
    out["spread"] *= 1.5
    out.loc[rng.random(len(out)) < 0.3, "missing"] = np.nan
    out.loc[rng.random(len(out)) < 0.08, "cat"] = "unseen"
    out["int"] += 0.01 * reference["int"].std()
    return out


def drift_trials(trials: int, rows: int, modules: dict[str, types.ModuleType]) -> dict[tuple[str, str], float]:
    """Share of trials flagged, per (stage, scenario): any column for no-change splits, the changed column otherwise."""
    from sklearn import datasets

    columns = ["normal", "uniform", "t", "bimodal", "skewed", "count", "spread", "missing", "cat", "int"]
    flagged: dict[tuple[str, str], int] = {}

    def count(key: tuple[str, str], hit: bool) -> None:
        flagged[key] = flagged.get(key, 0) + hit

    bundled = {name: getattr(datasets, f"load_{name}")(as_frame=True).frame for name in ("breast_cancer", "wine", "diabetes", "digits")}
    for t in range(trials):
        rng = np.random.default_rng(t)
        halves = {}
        for name, frame in bundled.items():
            order = rng.permutation(len(frame))
            halves[name] = (frame.iloc[order[: len(frame) // 2]], frame.iloc[order[len(frame) // 2 :]])
        reference, current = _synthetic(rng, rows), _synthetic(rng, rows)
        changed = _changed(current, reference, rng)
        for stage, module in modules.items():
            defaults = module.DEFAULTS
            for name, (ref, cur) in halves.items():
                categorical = ["target"] if name != "diabetes" else []
                results = module.compare(ref, cur, {**defaults, "categorical": categorical})
                count((stage, f"no change, {name} halves"), any(r.drifted for r in results))
            count(
                (stage, f"no change, synthetic {rows:,} rows"), any(r.drifted for r in module.compare(reference, current, dict(defaults)))
            )
            verdicts = {r.column: r.drifted for r in module.compare(reference, changed, dict(defaults))}
            for change, column in zip(CHANGES, columns, strict=True):
                count((stage, change), verdicts[column])
    return {key: n / trials for key, n in flagged.items()}


def drift_table(args: argparse.Namespace) -> None:
    from sluice.stages import data_drift

    drifts: dict[str, types.ModuleType] = {"data.drift": data_drift}
    if args.old_gates:
        sys.path.insert(0, str(args.old_gates))
        if (args.old_gates / "oldgates" / "data_drift.py").exists():
            from oldgates import data_drift as old_drift  # type: ignore[import-not-found]

            drifts["old data.drift"] = old_drift
    started = time.perf_counter()
    drift_rates = drift_trials(args.drift_trials, args.drift_rows, drifts)
    print(f"data.drift, defaults, {args.drift_trials} trials ({time.perf_counter() - started:.0f} s); share of trials flagged")
    scenarios = list(dict.fromkeys(scenario for _, scenario in drift_rates))
    print(f"{'scenario':38} " + " ".join(f"{stage:>15}" for stage in drifts))
    for scenario in scenarios:
        print(f"{scenario:38} " + " ".join(f"{drift_rates[(stage, scenario)]:>15.1%}" for stage in drifts))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--old-gates", type=Path, help="folder holding an `oldgates` package of older stage modules")
    parser.add_argument("--only", choices=("drift", "gate", "benchmark"), help="only these trials")
    parser.add_argument("--burn", type=int, default=0, help="CPU-burning processes run during the benchmark trials")
    parser.add_argument("--drift-trials", type=int, default=20)
    parser.add_argument("--drift-rows", type=int, default=200_000)
    args = parser.parse_args()

    if args.only in (None, "drift"):
        drift_table(args)
    if args.only == "drift":
        return
    from sluice.stages import model_benchmark
    from sluice.stages.model_gate import GateStage

    gates: dict[str, tuple[Plugin, bool]] = {
        "model.gate (paired)": (GateStage(), True),
        "model.gate (committed baseline file)": (GateStage(), False),
    }
    benches: dict[str, types.ModuleType] = {"model.benchmark": model_benchmark}
    if args.old_gates:
        sys.path.insert(0, str(args.old_gates))
        if (args.old_gates / "oldgates" / "model_gate.py").exists():
            from oldgates.model_gate import GateStage as OldGate  # type: ignore[import-not-found]

            gates["old model.gate (committed baseline file)"] = (OldGate(), False)
        if (args.old_gates / "oldgates" / "model_benchmark.py").exists():
            from oldgates import model_benchmark as old_benchmark  # type: ignore[import-not-found]

            benches["old model.benchmark"] = old_benchmark

    if args.only in (None, "gate"):
        gate_table(args.trials, gates)
    if args.only in (None, "benchmark"):
        benchmark_table(args.runs, benches, args.burn)


def gate_table(trials: int, gates: dict[str, tuple[Plugin, bool]]) -> None:
    started = time.perf_counter()
    rates = gate_trials(trials, gates)
    print(f"model.gate, breast cancer, 143 test rows, tolerance {TOLERANCE}, {trials} trials ({time.perf_counter() - started:.0f} s)")
    print(f"{'gate':42} {'rules':11} {'decision':15} {'false alarm':>11} " + " ".join(f"{f'fails {k}x':>9}" for k in VARIANTS[1:]))
    for gate in gates:
        for rule_name in RULE_SETS:
            for mode in MODES:
                row = [rates[(gate, rule_name, mode, k)] for k in VARIANTS]
                print(f"{gate:42} {rule_name:11} {mode:15} {row[0]:>11.1%} " + " ".join(f"{r:>9.1%}" for r in row[1:]))


def benchmark_table(runs: int, benches: dict[str, types.ModuleType], burners: int) -> None:
    """Identical runs and +50 % runs, each stage in turn, while `burners` processes keep the CPUs busy."""
    import multiprocessing

    config = {"batch_sizes": [1, 32], "rounds": 50, "warmup": 5, "sample_rows": 256, "max_ratio": 1.3}
    burning = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(burners)]
    for process in burning:
        process.start()
    started = time.perf_counter()
    try:
        rates = {
            name: (benchmark_runs(module, runs, 1.0, config), benchmark_runs(module, runs, 1.5, config)) for name, module in benches.items()
        }
    finally:
        for process in burning:
            process.terminate()
            process.join()
    took = time.perf_counter() - started
    print(f"\nmodel.benchmark, max_ratio 1.3, {runs} runs after the baseline run, {burners} CPU burner(s) ({took:.0f} s)")
    print(f"{'stage':22} {'false alarm (unchanged)':>24} {'detects +50 %':>14}")
    for name, (same, slower) in rates.items():
        print(f"{name:22} {same:>24.1%} {slower:>14.1%}")


if __name__ == "__main__":
    main()
