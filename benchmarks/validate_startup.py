"""Cold start of `sluice validate`, the command the pre-commit hook runs on every commit.

Prints, for each case, the best and the median wall time of fresh processes:
`python -c pass` (the interpreter's own floor on this machine), `python -X importtime`'s
slowest imports, then `sluice validate` on one small file and on 10 files.
Target (issue 3): under 0.3 s for one small file on a 2-core machine.

    python benchmarks/validate_startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SMALL = """\
version: 1
name: bench-{n}
params: {{model: {{C: 1.0}}}}
stages:
  prepare:
    cmd: cp data/raw.csv ${{outputs.clean}}
    inputs: {{raw: data/raw.csv}}
    outputs: {{clean: data/clean.csv}}
  copy:
    uses: util.copy
    inputs: {{clean: "${{stages.prepare.outputs.clean}}"}}
    outputs: {{clean: data/copy.csv}}
  report:
    cmd: echo ${{params.model.C}} ${{matrix.fold}}
    needs: [copy]
    matrix: {{fold: [0, 1, 2]}}
"""
TARGET_ONE = 0.3


def timed(cmd: Sequence[str], cwd: Path, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def show(label: str, times: list[float]) -> float:
    best = min(times)
    print(f"{label:<44} best {best * 1000:7.1f} ms   median {statistics.median(times) * 1000:7.1f} ms")
    return best


def slowest_imports(cwd: Path, top: int = 8) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sluice", "validate", "p0/pipeline.yaml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print(f"slowest imports (cumulative µs, one run, {len(rows)} modules):")
    for us, name in sorted(rows, reverse=True)[:top]:
        print(f"  {us:8d} {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    script = Path(sys.executable).parent / "sluice"  # the console script itself, not a pyenv shim
    sluice = [str(script)] if script.exists() else [shutil.which("sluice") or "sluice"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        files = []
        for n in range(10):
            (ws / f"p{n}").mkdir()
            (ws / f"p{n}" / "pipeline.yaml").write_text(SMALL.format(n=n))
            files.append(f"p{n}/pipeline.yaml")
        subprocess.run([*sluice, "validate", files[0]], cwd=ws, check=True, stdout=subprocess.DEVNULL)  # warm the page cache
        floor = show("python -c pass (baseline)", timed([sys.executable, "-c", "pass"], ws, args.repeat))
        show("python -c 'import yaml, jsonschema'", timed([sys.executable, "-c", "import yaml, jsonschema"], ws, args.repeat))
        one = show("sluice validate (1 small file)", timed([*sluice, "validate", files[0]], ws, args.repeat))
        show("sluice validate (10 files)", timed([*sluice, "validate", *files], ws, args.repeat))
        show("python -m sluice validate (1 small file)", timed([sys.executable, "-m", "sluice", "validate", files[0]], ws, args.repeat))
        slowest_imports(ws)
    verdict = "meets" if one < TARGET_ONE else "MISSES"
    print(f"one small file: {one:.3f} s, {one - floor:.3f} s above bare python; {verdict} the {TARGET_ONE} s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
