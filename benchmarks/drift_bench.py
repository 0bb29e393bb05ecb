"""data.drift on a wide, long table: 1,000,000 rows × 100 columns (90 numeric, 10 categorical) per side.

Target: under 60 s on a 2-core machine, reading both Parquet files included. The tables are
generated first (not timed); then the plugin runs exactly as `sluice run` would call it.

    python benchmarks/drift_bench.py [--rows N] [--columns N] [--max-rows N|none]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sluice.engine.plugin import StageContext
from sluice.stages.data_drift import DriftStage

CATEGORIES = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
TARGET_SECONDS = 60.0


def make_table(rows: int, columns: int, seed: int, shift: float) -> pd.DataFrame:
    """Numeric columns N(shift on the first one, 1); a tenth of the columns categorical."""
    rng = np.random.default_rng(seed)
    categorical = max(1, columns // 10)
    numeric = rng.standard_normal((rows, columns - categorical))
    numeric[:, 0] += shift
    frame = pd.DataFrame(numeric, columns=[f"num_{i}" for i in range(columns - categorical)])
    for i in range(categorical):
        frame[f"cat_{i}"] = CATEGORIES[rng.integers(0, len(CATEGORIES), rows)]
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=100)
    parser.add_argument("--max-rows", default="200000", help="the plugin's max_rows; 'none' tests every row")
    args = parser.parse_args()
    max_rows = None if args.max_rows == "none" else int(args.max_rows)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        make_table(args.rows, args.columns, 1, 0.0).to_parquet(root / "reference.parquet", index=False)
        make_table(args.rows, args.columns, 2, 0.2).to_parquet(root / "current.parquet", index=False)
        print(f"generated 2 × {args.rows:,} rows × {args.columns} columns in {time.perf_counter() - started:.1f} s (not timed)")
        ctx = StageContext(
            stage="drift",
            config={"max_rows": max_rows, "fail": False},
            inputs={"reference": root / "reference.parquet", "current": root / "current.parquet"},
            outputs={"report": root / "out" / "drift.json"},
            params={},
            workspace=root,
            state_dir=root / "state",
            log=logging.getLogger("drift_bench"),
        )
        started = time.perf_counter()
        DriftStage().run(ctx)
        seconds = time.perf_counter() - started
    verdict = "within" if seconds < TARGET_SECONDS else "OVER"
    print(f"data.drift, max_rows={max_rows}: {seconds:.2f} s ({verdict} the {TARGET_SECONDS:.0f} s target)")


if __name__ == "__main__":
    main()
