"""data.validate on a long table: 1,000,000 rows × 20 columns, read from Parquet, called as `sluice run` would.

Two configs: `simple` uses only the rules data.validate always had (dtype, nullable, min/max,
allowed, unique, regex, rows), so the same figure can be taken on an older revision
(`PYTHONPATH=/path/to/old/checkout python benchmarks/validate_bench.py --configs simple`);
`rich` adds the newer checks (exclusive bounds, forbidden values, lengths, composite
uniqueness, a cross-column rule, statistics, date rules, a tolerance share). Each run is timed
with time.perf_counter around the plugin's run(), reading the table included; the table is
generated first (not timed). Best of --repeat runs.

    python benchmarks/validate_bench.py [--rows N] [--repeat N] [--configs simple,rich] [--bad-share F]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sluice.engine.plugin import StageContext, StageFailed
from sluice.stages.data_validate import ValidateStage

COUNTRIES = np.array(["FR", "DE", "IT", "ES", "NL"])


def make_table(rows: int, bad_share: float, seed: int = 0) -> pd.DataFrame:
    """12 float, 3 int, 3 text, 1 id and 1 date (as text, like a CSV) column; `bad_share` of rows break a rule."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(0, 100, (rows, 12)), columns=[f"x{i}" for i in range(12)])
    for i in range(3):
        frame[f"n{i}"] = rng.integers(0, 1000, rows)
    for i in range(3):
        frame[f"c{i}"] = COUNTRIES[rng.integers(0, len(COUNTRIES), rows)]
    frame["id"] = pd.Series(np.arange(rows)).map("id{:08d}".format)
    frame["day"] = (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1500, rows), unit="D")).strftime("%Y-%m-%d")
    bad = rng.random(rows) < bad_share
    frame.loc[bad, "x0"] = -1.0
    frame.loc[bad, "c0"] = "XX"
    return frame


def simple_config() -> dict[str, Any]:
    columns: dict[str, Any] = {f"x{i}": {"dtype": "float", "nullable": False, "min": 0, "max": 100} for i in range(12)}
    columns |= {f"n{i}": {"dtype": "int", "min": 0, "max": 999} for i in range(3)}
    columns |= {f"c{i}": {"dtype": "string", "allowed": list(COUNTRIES)} for i in range(3)}
    columns["id"] = {"dtype": "string", "unique": True, "regex": "id[0-9]{8}"}
    columns["day"] = {"dtype": "string", "nullable": False}
    return {"rows": {"min": 1}, "strict": True, "columns": columns}


def rich_config() -> dict[str, Any]:
    config = simple_config()
    columns = config["columns"]
    columns["x1"] |= {"exclusive_min": -1, "stats": {"mean": {"min": 40, "max": 60}, "p99": {"max": 100}, "std": {"max": 40}}}
    columns["x2"] |= {"mostly": 0.99}
    columns["c1"] |= {"forbidden": ["XX", "??"], "min_length": 2, "max_length": 2}
    columns["day"] = {"dtype": "datetime", "nullable": False, "min_date": "2019-01-01", "not_future": True}
    config["unique"] = ["id", "n0"]
    config["compare"] = [{"left": "n0", "op": "<=", "right": "x3", "mostly": 0.0}]
    return config


def time_run(path: Path, config: dict[str, Any], root: Path, repeat: int) -> tuple[float, str]:
    best, outcome = float("inf"), ""
    for _ in range(repeat):
        ctx = StageContext(
            stage="validate",
            config=config,
            inputs={"table": path},
            outputs={"report": root / "out" / "validation.json"},
            params={},
            workspace=root,
            state_dir=root / "state",
            log=logging.getLogger("bench"),
        )
        started = time.perf_counter()
        try:
            ValidateStage().run(ctx)
            outcome = "passed"
        except StageFailed as exc:
            outcome = str(exc)
        best = min(best, time.perf_counter() - started)
    report = json.loads((root / "out" / "validation.json").read_text())
    return best, f"{outcome}; {len(report['rules'])} rules in the report"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--configs", default="simple,rich")
    parser.add_argument("--bad-share", type=float, default=0.001, help="share of rows that break a rule (x0 < 0, c0 = 'XX')")
    args = parser.parse_args()
    configs = {"simple": simple_config, "rich": rich_config}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        frame = make_table(args.rows, args.bad_share)
        frame.to_parquet(root / "table.parquet", index=False)
        print(f"generated {args.rows:,} rows × {frame.shape[1]} columns in {time.perf_counter() - started:.1f} s (not timed)")
        started = time.perf_counter()
        pd.read_parquet(root / "table.parquet")
        print(f"{'read the Parquet file only':<28} {time.perf_counter() - started:7.2f} s")
        for name in args.configs.split(","):
            seconds, outcome = time_run(root / "table.parquet", configs[name](), root, args.repeat)
            print(f"{name + ' config, best of ' + str(args.repeat):<28} {seconds:7.2f} s   {outcome}")


if __name__ == "__main__":
    main()
