"""Start-up of every `sluice` command next to `python -c pass`, measured in one run (issue 12).

Each case is a fresh process; the cases are interleaved (one of each, then again) so a busy
machine slows them alike, and each prints its median wall time and that median as a multiple
of `python -c pass`'s. Targets: `validate` of one small file ≤ 5×, a no-op `run` of one
stage ≤ 8×. `--imports` also prints, per command, how many modules it imports and the
slowest of them (`python -X importtime`, one run each).

The sluice tested is the source tree this script lives in (PYTHONPATH points at it), started
through the `sluice` console script beside the running Python (a pyenv shim adds ~0.5 s).
The tree is byte-compiled first: with PYTHONDONTWRITEBYTECODE set, nothing would be cached and
every run would include compiling the engine. The compiled schema checks (engine.schema_check)
go to a fresh folder, filled by the untimed warm-up runs: the figures are of a warm cache.

    python benchmarks/startup.py [--repeat N] [--imports] [--sluice CMD]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from compiled import compile_sources  # beside this script

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"sluice validate (1 small file)": 5.0, "sluice run, no-op (1 stage)": 8.0}

SMALL = """\
version: 1
name: small
params: {model: {C: 1.0}}
stages:
  prepare:
    cmd: cp data/raw.csv ${outputs.clean}
    inputs: {raw: data/raw.csv}
    outputs: {clean: data/clean.csv}
  copy:
    uses: util.copy
    inputs: {clean: "${stages.prepare.outputs.clean}"}
    outputs: {clean: data/copy.csv}
  report:
    cmd: echo ${params.model.C} ${matrix.fold}
    needs: [copy]
    matrix: {fold: [0, 1, 2]}
"""
INVALID = SMALL.replace("    needs: [copy]\n", "    neds: [copy]\n").replace("uses: util.copy", "uses: util.copyy")
ONE = """\
version: 1
stages:
  only:
    cmd: cp src.txt ${outputs.o}
    inputs: {src: src.txt}
    outputs: {o: out/only.txt}
"""


def chain(n: int) -> str:
    lines = [
        "version: 1",
        "stages:",
        "  s0:",
        "    cmd: cp src.txt ${outputs.o}",
        "    inputs: {src: src.txt}",
        "    outputs: {o: out/s0.txt}",
    ]
    for i in range(1, n):
        lines += [
            f"  s{i}:",
            f"    cmd: cp ${{inputs.i}} ${{outputs.o}} && echo s{i} >> ${{outputs.o}}",
            f"    inputs: {{i: '${{stages.s{i - 1}.outputs.o}}'}}",
            f"    outputs: {{o: out/s{i}.txt}}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    label: str
    argv: tuple[str, ...]
    cwd: Path
    ok_codes: tuple[int, ...] = (0,)


def workspace(parent: Path, name: str, spec: str, files: dict[str, str]) -> Path:
    ws = parent / name
    ws.mkdir()
    (ws / "pipeline.yaml").write_text(spec)
    for rel, text in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    return ws


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run_once(case: Case, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh process; CPU moves less on a busy machine."""
    cpu, start = _cpu(), time.perf_counter()
    done = subprocess.run(case.argv, check=False, cwd=case.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode not in case.ok_codes:
        raise SystemExit(f"{case.label}: exit {done.returncode}\n{done.stderr.decode(errors='replace')}")
    return elapsed, _cpu() - cpu


def imports(case: Case, env: dict[str, str], top: int) -> None:
    argv = [*case.argv[:1], "-X", "importtime", *case.argv[1:]] if case.argv[0] == sys.executable else None
    if argv is None:
        return
    err = subprocess.run(argv, check=False, cwd=case.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    # Top level only (one space before the name): a nested import is inside its parent's figure.
    outer = [(us, name.strip()) for us, name in rows if not name.startswith("  ")]
    slow = ", ".join(f"{name} {us / 1000:.0f}" for us, name in sorted(outer, reverse=True)[:top])
    print(f"  {case.label}: {len(rows)} modules; slowest top-level imports (ms, with what they import): {slow}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=15, help="runs of each case (default: 15)")
    ap.add_argument("--imports", action="store_true", help="also list each command's imports (python -X importtime)")
    ap.add_argument("--sluice", help="how to start sluice (default: the console script beside this Python)")
    args = ap.parse_args()

    compile_sources(ROOT)
    script = Path(sys.executable).parent / "sluice"
    sluice = shlex.split(args.sluice) if args.sluice else [str(script)] if script.exists() else [shutil.which("sluice") or "sluice"]
    # The console script is a Python file: starting it through this interpreter lets --imports see inside.
    if not args.sluice and script.exists():
        sluice = [sys.executable, str(script)]
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp)
        pythonpath = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env = {**os.environ, "PYTHONPATH": pythonpath, "SLUICE_SCHEMA_CACHE": str(parent / "schema-checks")}
        small = workspace(parent, "small", SMALL, {"data/raw.csv": "a\n"})
        bad = workspace(parent, "bad", INVALID, {})
        one = workspace(parent, "one", ONE, {"src.txt": "x\n"})
        hundred = workspace(parent, "hundred", chain(100), {"src.txt": "x\n"})
        for ws in (one, hundred):  # the first run does the work; every timed run is a no-op
            subprocess.run([*sluice, "run", "--jobs", "2"], cwd=ws, env=env, check=True, stdout=subprocess.DEVNULL)
        py = sys.executable
        cases = [
            Case("python -c pass", (py, "-c", "pass"), parent),
            Case("python -c 'import sluice'", (py, "-c", "import sluice"), parent),
            Case("sluice --version", (*sluice, "--version"), parent),
            Case("sluice validate (1 small file)", (*sluice, "validate"), small),
            Case("sluice validate (1 invalid file)", (*sluice, "validate"), bad, (2,)),
            Case("sluice validate (10 files)", (*sluice, "validate", *(["pipeline.yaml"] * 10)), small),
            Case("sluice status (1 stage)", (*sluice, "status"), one),
            Case("sluice run, no-op (1 stage)", (*sluice, "run"), one),
            Case("sluice run, no-op (100 stages)", (*sluice, "run"), hundred),
            Case("sluice dag (text, 100 stages)", (*sluice, "dag"), hundred),
        ]
        wall: dict[str, list[float]] = {c.label: [] for c in cases}
        cpu: dict[str, list[float]] = {c.label: [] for c in cases}
        for case in cases:  # warm the page cache
            run_once(case, env)
        for _ in range(args.repeat):
            for case in cases:
                w, c = run_once(case, env)
                wall[case.label].append(w)
                cpu[case.label].append(c)
        floor, cpu_floor = statistics.median(wall[cases[0].label]), statistics.median(cpu[cases[0].label])
        print(f"{args.repeat} interleaved runs of each, load average {os.getloadavg()[0]:.2f}; medians, and each ÷ `python -c pass`'s")
        print(f"  {'command':<36} {'wall s':>7} {'×':>5}   {'cpu s':>6} {'×':>5}   best wall")
        for case in cases:
            med, med_cpu = statistics.median(wall[case.label]), statistics.median(cpu[case.label])
            ratio = med / floor
            target = TARGETS.get(case.label)
            verdict = f"   target ≤ {target:g}×: {'meets' if ratio <= target else 'MISSES'}" if target else ""
            print(
                f"  {case.label:<36} {med:7.3f} {ratio:5.1f}×   {med_cpu:6.3f} {med_cpu / cpu_floor:5.1f}×"
                f"   {min(wall[case.label]):.3f}{verdict}"
            )
        if args.imports:
            print("imports (one run each):")
            for case in cases[1:]:
                imports(case, env, top=6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
