"""Time `sluice dag` on a 1,000-stage pipeline: SVG through Graphviz, and the pure-Python formats.

The pipeline is layered like a real one: stages read one to three outputs of earlier stages
(fan-in), many stages read the same output (fan-out), and every 25th stage is a 4-way matrix.

    python benchmarks/dag_render.py [--stages N]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def pipeline(n: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    lines = ["version: 1", f"name: bench-{n}", "stages:"]
    produced: list[str] = []  # stage names with an output
    count = 0
    i = 0
    while count < n:
        name = f"s{i:04d}"
        matrix = i % 25 == 24 and n - count >= 4
        lines.append(f"  {name}:")
        lines.append("    cmd: cat ${inputs.a} > ${outputs.o}" if produced else "    cmd: echo start > ${outputs.o}")
        if produced:
            window = produced[-60:]
            picks = rnd.sample(window, k=min(len(window), rnd.choice((1, 1, 2, 3))))
            ins = ", ".join(f'{chr(97 + j)}: "${{stages.{p}.outputs.o}}"' for j, p in enumerate(picks))
            lines.append(f"    inputs: {{{ins}}}")
        if matrix:
            lines.append("    matrix: {k: [0, 1, 2, 3]}")
            lines.append(f'    outputs: {{o: "out/{name}-${{matrix.k}}.txt"}}')
            count += 4
        else:
            lines.append(f"    outputs: {{o: out/{name}.txt}}")
            produced.append(name)
            count += 1
        i += 1
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--stages", type=int, default=1000)
    args = ap.parse_args()
    sluice = [sys.executable, "-m", "sluice"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "pipeline.yaml").write_text(pipeline(args.stages))
        timed([*sluice, "validate"], ws)  # warm caches
        dot = subprocess.run(["dot", "-V"], capture_output=True, text=True, check=False).stderr.strip() if shutil.which("dot") else ""
        print(f"{args.stages} stages ({'Graphviz ' + dot if dot else 'no Graphviz'})")
        for fmt in ("text", "json", "mermaid", "dot", "html", "svg"):
            if fmt == "svg" and not shutil.which("dot"):
                print("svg        skipped: Graphviz `dot` is not installed (apt-get install graphviz)")
                continue
            out = ws / f"dag.{fmt}"
            took = timed([*sluice, "dag", "--format", fmt, "-o", str(out)], ws)
            print(f"{fmt:<10} {took:7.2f} s   {out.stat().st_size / 1024:8.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
