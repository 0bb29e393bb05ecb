"""Where a fresh checkout's `sluice run --remote` spends its time (issue 11), phase by phase.

    python benchmarks/restore_phases.py                # 100 x 1 MB chain, 3 runs
    python benchmarks/restore_phases.py --stages 300 --repeat 5

Against a real SeaweedFS on 127.0.0.1, like remote_bench.py. Each run is a fresh process that
wraps the engine's phases (planning, the remote's connection, its requests, the executor, each
restore) with timestamps and prints, from the process's own start: when planning began, how
long connecting (importing s3fs, making its client) took, the span of the requests, the
executor's span, and the restores' total time across threads. Times count from when the probe
starts (the interpreter is up, nothing of sluice imported yet). The medians over the runs follow.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiled import compile_sources  # noqa: E402  (beside this script)
from remote_bench import ENV, _fresh, _pipeline, _sluice  # noqa: E402

from tests.support.s3servers import seaweedfs  # noqa: E402

# Run in the child: time each phase by wrapping the methods that make it, then run the CLI.
_PROBE = """
import json, runpy, sys, threading, time
T0 = time.perf_counter()
spans = {}
lock = threading.Lock()
from sluice.engine import execute, plan
from sluice.engine.remote import fsspec_store
def wrap(cls, name, label, counts=lambda a: True):
    inner = getattr(cls, name)
    def timed(*a, **k):
        if not counts(a):
            return inner(*a, **k)
        t = time.perf_counter() - T0
        try:
            return inner(*a, **k)
        finally:
            with lock:
                first, last, total = spans.get(label, (t, 0.0, 0.0))
                now = time.perf_counter() - T0
                spans[label] = (min(first, t), max(last, now), total + now - t)
    setattr(cls, name, timed)
wrap(plan.Planner, "plan", "plan")
wrap(fsspec_store.FsspecStore, "_connect", "connect")
wrap(fsspec_store.FsspecStore, "_call", "requests", lambda a: not a[1].startswith("CONNECT"))
wrap(execute.Executor, "run", "executor")
wrap(execute.Executor, "_restore", "restores")
sys.argv = ["sluice", *sys.argv[1:]]
try:
    runpy.run_module("sluice", run_name="__main__")
finally:
    spans["exit"] = (0.0, time.perf_counter() - T0, 0.0)
    sys.stderr.write("PHASES " + json.dumps(spans) + "\\n")
"""


def _phases(folder: Path) -> dict[str, list[float]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "run", "-j", "4", "--remote", "team"],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("PHASES ")), None)
    if proc.returncode or line is None:
        raise SystemExit(proc.stdout + proc.stderr)
    return {k: list(v) for k, v in json.loads(line.removeprefix("PHASES ")).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", type=int, default=100)
    ap.add_argument("--size", type=int, default=1_000_000, help="bytes per output")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    compile_sources()
    with tempfile.TemporaryDirectory() as server_tmp, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with seaweedfs(Path(server_tmp) / "seaweedfs", ("sluice-bench",)) as endpoint:
            ws = tmp / "chain"
            _pipeline(ws, args.stages, args.size, "s3://sluice-bench/chain", endpoint)
            _sluice(ws, "--remote", "team")  # runs every stage and pushes it (and the lock's pack)
            rows = []
            for _ in range(args.repeat):
                _fresh(ws, tmp / "fresh")
                rows.append(_phases(tmp / "fresh"))
    figures = {
        "planning starts": [r["plan"][0] for r in rows],
        "connect (s3fs import, client)": [r["connect"][2] for r in rows],
        "requests, first to last": [r["requests"][1] - r["requests"][0] for r in rows],
        "executor": [r["executor"][2] for r in rows],
        "restores, summed over threads": [r["restores"][2] for r in rows],
        "done (from the probe's start)": [r["exit"][1] for r in rows],
    }
    print(f"fresh checkout, {args.stages} x {args.size:,} B, `sluice run --remote`: seconds, median of {args.repeat} (each run)")
    for label, values in figures.items():
        print(f"  {label:32s} {statistics.median(values):6.3f}   ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
