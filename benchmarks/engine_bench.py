"""Engine benchmark: run, rerun and validate costs of `sluice` against the targets of issue 2.

Plain script, not a test: it generates pipelines in temporary directories, drives the real
CLI through subprocesses, and prints a table of figures. See benchmarks/README.md.

    python benchmarks/engine_bench.py                 # N = 10, 100, 1000; 10,000-stage spec; 1 GiB hash
    python benchmarks/engine_bench.py --quick         # N = 10, 100 only
    python benchmarks/engine_bench.py --compare       # also DVC and Snakemake, in their own venvs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiled import compile_sources  # noqa: E402  (beside this script)

# Targets from issue 2, "Performance".
NOOP_TARGET_S = 0.5  # no-op rerun of 1,000 stages, both shapes
OVERHEAD_TARGET_MS = 5.0  # per stage, beyond the command itself, flat in N
VALIDATE_TARGET_S = 2.0  # `sluice validate` of a 10,000-stage chain
STARTUP_TARGET_S = 0.2  # `sluice validate` of a tiny spec
HASH_TARGET_GBS = 3.0  # GB/s (10^9 bytes) from page cache
SHAPES = ("chain", "fanout")
TOOLS = {"dvc": ["dvc"], "snakemake": ["snakemake"]}


# ---------------------------------------------------------------- pipeline shapes


def chain_cmd(i: int, src: str, dst: str) -> str:
    return f"cat {src} > {dst} && echo s{i} >> {dst}"


def fan_cmd(i: int, src: str, dst: str) -> str:
    return f"cat {src} > {dst} && echo f{i} >> {dst}"


def join_cmd(srcs: Sequence[str], dst: str) -> str:
    return f"cat {' '.join(srcs)} > {dst}"


@dataclass(frozen=True)
class Step:
    """One stage, tool-neutral: its name, input paths, output path and a bash command builder."""

    name: str
    inputs: tuple[str, ...]
    output: str
    make_cmd: Callable[[Sequence[str], str], str]  # (input refs, output ref) → command


def steps(shape: str, n: int) -> list[Step]:
    """The stages of a shape; stage i of a chain reads stage i-1's output, s0 reads src.txt."""
    if shape == "chain":
        out = []
        for i in range(n):
            src = "src.txt" if i == 0 else f"out/s{i - 1}.txt"
            out.append(Step(f"s{i}", (src,), f"out/s{i}.txt", lambda ins, o, i=i: chain_cmd(i, ins[0], o)))
        return out
    fans = [Step(f"f{i}", ("src.txt",), f"out/f{i}.txt", lambda ins, o, i=i: fan_cmd(i, ins[0], o)) for i in range(n)]
    join = Step("join", tuple(s.output for s in fans), "out/join.txt", lambda ins, o: join_cmd(ins, o))
    return [*fans, join]


def sluice_yaml(shape: str, n: int) -> str:
    """pipeline.yaml text; edges come from ${stages.X.outputs.o} references."""
    lines = ["version: 1", f"name: bench-{shape}-{n}", "stages:"]
    produced: dict[str, str] = {}
    for st in steps(shape, n):
        names = [f"i{k}" for k in range(len(st.inputs))]
        refs = [f"${{stages.{produced[p]}.outputs.o}}" if p in produced else p for p in st.inputs]
        cmd = st.make_cmd([f"${{inputs.{nm}}}" for nm in names], "${outputs.o}")
        lines.append(f"  {st.name}:")
        lines.append(f"    cmd: {json.dumps(cmd)}")
        lines.append("    inputs: {" + ", ".join(f'{nm}: "{r}"' for nm, r in zip(names, refs, strict=True)) + "}")
        lines.append(f"    outputs: {{o: {st.output}}}")
        produced[st.output] = st.name
    return "\n".join(lines) + "\n"


def many_inputs_yaml(n: int) -> str:
    """One stage reading n plain files (no producers), each named in its command."""
    names = [f"i{k}" for k in range(n)]
    cmd = "cat " + " ".join(f"${{inputs.{nm}}}" for nm in names) + " > ${outputs.o}"
    lines = ["version: 1", f"name: bench-inputs-{n}", "stages:", "  join:", f"    cmd: {json.dumps(cmd)}"]
    lines.append("    inputs: {" + ", ".join(f"{nm}: in/{nm}.txt" for nm in names) + "}")
    lines.append("    outputs: {o: out/join.txt}")
    return "\n".join(lines) + "\n"


def dvc_yaml(shape: str, n: int) -> str:
    lines = ["stages:"]
    for st in steps(shape, n):
        lines.append(f"  {st.name}:")
        lines.append(f"    cmd: {json.dumps(st.make_cmd(list(st.inputs), st.output))}")
        lines.append("    deps: [" + ", ".join(st.inputs) + "]")
        lines.append(f"    outs: [{st.output}]")
    return "\n".join(lines) + "\n"


def snakefile(shape: str, n: int) -> str:
    sts = steps(shape, n)
    finals = [sts[-1].output]
    lines = ["rule all:", f"    input: {finals!r}", ""]
    for st in sts:
        ins = [f"{{input[{k}]}}" for k in range(len(st.inputs))]
        lines.append(f"rule {st.name}:")
        lines.append(f"    input: {list(st.inputs)!r}")
        lines.append(f"    output: {st.output!r}")
        lines.append(f"    shell: {st.make_cmd(ins, '{output}')!r}")
        lines.append("")
    return "\n".join(lines)


def write_source(ws: Path, version: int) -> None:
    (ws / "src.txt").write_text(f"source version {version}\n")


# ---------------------------------------------------------------- measuring


@dataclass
class Timed:
    seconds: float
    rc: int
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + system seconds of the process and the children it waited for

    @property
    def ok(self) -> bool:
        return self.rc == 0


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> Timed:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return Timed(time.perf_counter() - t0, -999, "", f"timed out after {exc.timeout:g}s")
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return Timed(seconds, p.returncode, p.stdout, p.stderr, cpu)


def best_of(k: int, fn: Callable[[], Timed]) -> Timed:
    runs = [fn() for _ in range(k)]
    bad = [r for r in runs if not r.ok]
    return bad[0] if bad else min(runs, key=lambda r: r.seconds)


def bare_commands(shape: str, n: int) -> float:
    """Wall time of the same bash commands run serially with no engine around them."""
    with tempfile.TemporaryDirectory(prefix="sluice-bare-") as tmp:
        ws = Path(tmp)
        (ws / "out").mkdir()
        write_source(ws, 0)
        t0 = time.perf_counter()
        for st in steps(shape, n):
            cmd = st.make_cmd(list(st.inputs), st.output)
            subprocess.run(["bash", "-eo", "pipefail", "-c", cmd], cwd=ws, check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - t0


def fs_probe(n: int = 200) -> str:
    """Median cost of mkdir and of creating a small file where the workspaces live: on a busy VM
    disk these can take milliseconds and then dominate the per-stage overhead."""
    import statistics

    with tempfile.TemporaryDirectory(prefix="sluice-bench-fs-") as tmp:
        mk, cr = [], []
        for i in range(n):
            t0 = time.perf_counter()
            os.mkdir(f"{tmp}/d{i}")
            t1 = time.perf_counter()
            with open(f"{tmp}/f{i}", "w") as f:
                f.write("x")
            cr.append(time.perf_counter() - t1)
            mk.append(t1 - t0)
    return f"mkdir {statistics.median(mk) * 1e6:.0f} µs, create file {statistics.median(cr) * 1e6:.0f} µs (medians)"


def tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- sluice runs


@dataclass
class RunRow:
    tool: str
    shape: str
    n: int
    stages: int
    first: float | None = None
    noop: float | None = None
    noop_cpu: float | None = None  # CPU seconds of the best no-op: less sensitive to a busy machine
    change: float | None = None
    bare: float | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    def overhead_ms(self, fixed: float = 0.0) -> float | None:
        if self.first is None or self.bare is None:
            return None
        return (self.first - self.bare - fixed) / self.stages * 1000


def sluice_argv(args: argparse.Namespace) -> list[str]:
    """The real `sluice` entry point; the one beside this interpreter skips slow shims (pyenv)."""
    if args.sluice:
        return shlex.split(args.sluice)
    beside = Path(sys.executable).with_name("sluice")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("sluice")
    return [found] if found else [sys.executable, "-m", "sluice"]


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SLUICE_CACHE_DIR", None)  # every workspace keeps its own cache
    return env


def outcomes(t: Timed) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        for st in json.loads(t.stdout)["stages"].values():
            counts[st["outcome"]] = counts.get(st["outcome"], 0) + 1
    except (ValueError, KeyError, TypeError):
        pass
    return counts


def bench_sluice(sluice: list[str], shape: str, n: int, jobs: int, bare: float, keep: bool) -> RunRow:
    total = len(steps(shape, n))
    row = RunRow("sluice", shape, n, total, bare=bare)
    tmp = tempfile.mkdtemp(prefix=f"sluice-bench-{shape}-{n}-")
    ws = Path(tmp)
    env = clean_env()
    try:
        (ws / "pipeline.yaml").write_text(sluice_yaml(shape, n))
        write_source(ws, 0)
        run = [*sluice, "run", "-f", "pipeline.yaml", "--jobs", str(jobs), "--json"]

        def check(t: Timed, what: str, outcome: str, expected: int) -> bool:
            if not t.ok:
                row.error = f"{what}: exit {t.rc}: {tail(t.stderr or t.stdout)}"
                return False
            got = outcomes(t).get(outcome, 0)
            if got != expected:
                row.notes.append(f"{what}: {got} of {total} stages {outcome}, expected {expected}")
            return True

        first = timed(run, ws, env)
        if not check(first, "first run", "ran", total):
            return row
        row.first = first.seconds
        noop = best_of(3, lambda: timed(run, ws, env))
        if not check(noop, "no-op rerun", "skipped", total):
            return row
        row.noop, row.noop_cpu = noop.seconds, noop.cpu
        write_source(ws, 1)
        change = timed(run, ws, env)
        if not check(change, "rerun after source change", "ran", total):
            return row
        row.change = change.seconds
        return row
    finally:
        if keep:
            row.notes.append(f"kept {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)


# ---------------------------------------------------------------- DVC and Snakemake


def tool_bin(cache: Path, tool: str) -> Path:
    return cache / tool / "bin" / tool


def install_tool(cache: Path, tool: str, timeout: float) -> str:
    """Create cache/<tool> as a venv with the tool in it; returns '' or why it failed."""
    exe = tool_bin(cache, tool)
    if exe.exists():
        return ""
    venv = cache / tool
    print(f"  installing {tool} into {venv} (up to {timeout:.0f}s) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True, timeout=120)
        p = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *TOOLS[tool]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"pip install {tool} took longer than {timeout:.0f}s"
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot create a venv: {exc}"
    if p.returncode != 0 or not exe.exists():
        return f"pip install {tool} failed: {tail(p.stderr or p.stdout)}"
    return ""


def bench_tool(cache: Path, tool: str, shape: str, n: int, bare: float, timeout: float, keep: bool) -> RunRow:
    total = len(steps(shape, n))
    row = RunRow(tool, shape, n, total, bare=bare)
    ws = Path(tempfile.mkdtemp(prefix=f"{tool}-bench-{shape}-{n}-"))
    exe = str(tool_bin(cache, tool))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        write_source(ws, 0)
        (ws / "out").mkdir()
        if tool == "dvc":
            (ws / "dvc.yaml").write_text(dvc_yaml(shape, n))
            for argv in (["git", "init", "-q"], [exe, "init", "-q"], [exe, "config", "core.autostage", "false"]):
                t = timed(argv, ws, env, 120)
                if not t.ok:
                    row.error = f"{' '.join(argv[:2])}: {tail(t.stderr or t.stdout)}"
                    return row
            run = [exe, "repro", "-q"]
        else:
            (ws / "Snakefile").write_text(snakefile(shape, n))
            # Not --quiet: it also hides why a run failed (e.g. the RecursionError on long chains).
            run = [exe, "-j1", "all", "--snakefile", "Snakefile"]

        def go(what: str) -> Timed | None:
            t = timed(run, ws, env, timeout)
            if not t.ok:
                msg = tail(t.stderr or t.stdout) or "no output"
                if "RecursionError" in t.stderr + t.stdout:
                    msg = "RecursionError"
                row.error = f"{what}: exit {t.rc}: {msg}"
                return None
            return t

        first = go("first run")
        if first is None:
            return row
        row.first = first.seconds
        runs = []
        for _ in range(3):
            t = go("no-op rerun")
            if t is None:
                return row
            runs.append(t)
        best = min(runs, key=lambda t: t.seconds)
        row.noop, row.noop_cpu = best.seconds, best.cpu
        write_source(ws, 1)
        change = go("rerun after source change")
        if change is None:
            return row
        row.change = change.seconds
        return row
    finally:
        if keep:
            row.notes.append(f"kept {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)


# ---------------------------------------------------------------- big spec, hashing


@dataclass
class BigRow:
    name: str
    seconds: float | None
    target: str = ""
    verdict: str = ""
    note: str = ""


def bench_big(sluice: list[str], n: int, small_file: Path, run_it: bool, jobs: int) -> list[BigRow]:
    """validate / dag / status (and optionally run) on an n-stage chain, with baselines."""
    import yaml

    rows: list[BigRow] = []
    env = clean_env()
    ws = Path(tempfile.mkdtemp(prefix=f"sluice-bench-big-{n}-"))
    try:
        spec = ws / "pipeline.yaml"
        spec.write_text(sluice_yaml("chain", n))
        write_source(ws, 0)
        size = spec.stat().st_size

        t = best_of(3, lambda: timed([sys.executable, "-c", "pass"], ws, env))
        rows.append(BigRow("python -c pass", t.seconds, note="interpreter start, baseline"))
        startup = best_of(3, lambda: timed([*sluice, "validate", str(small_file)], ws, env))
        rows.append(_verdict(BigRow("sluice validate, 10-stage spec (startup)", startup.seconds), startup, STARTUP_TARGET_S))

        loader = getattr(yaml, "CSafeLoader", None)
        text = spec.read_text()
        parse = []
        for _ in range(3):
            t0 = time.perf_counter()
            yaml.load(text, Loader=loader or yaml.SafeLoader)
            parse.append(time.perf_counter() - t0)
        rows.append(
            BigRow(
                f"PyYAML {'CSafeLoader' if loader else 'SafeLoader (no libyaml!)'} parse only, {n:,} stages",
                min(parse),
                note=f"{size / 1e6:.1f} MB, in-process, baseline",
            )
        )

        v = best_of(3, lambda: timed([*sluice, "validate", "pipeline.yaml"], ws, env))
        rows.append(_verdict(BigRow(f"sluice validate, {n:,}-stage chain", v.seconds), v, VALIDATE_TARGET_S))
        for what, argv in (
            ("sluice dag --format json", [*sluice, "dag", "-f", "pipeline.yaml", "--format", "json"]),
            ("sluice dag (text)", [*sluice, "dag", "-f", "pipeline.yaml"]),
            ("sluice status (never run)", [*sluice, "status", "-f", "pipeline.yaml", "--json"]),
        ):
            t = timed(argv, ws, env)
            rows.append(_verdict(BigRow(f"{what}, {n:,}-stage chain", t.seconds), t, None))
        if run_it:
            t = timed([*sluice, "run", "-f", "pipeline.yaml", "--jobs", str(jobs), "--json"], ws, env)
            rows.append(
                _verdict(BigRow(f"sluice run (first), {n:,}-stage chain", t.seconds), t, None, f"{outcomes(t).get('ran', 0):,} ran")
            )
            t = best_of(3, lambda: timed([*sluice, "run", "-f", "pipeline.yaml", "--json"], ws, env))
            rows.append(
                _verdict(BigRow(f"sluice run (no-op), {n:,}-stage chain", t.seconds), t, None, f"{outcomes(t).get('skipped', 0):,} skipped")
            )
            t = timed([*sluice, "status", "-f", "pipeline.yaml", "--json"], ws, env)
            rows.append(_verdict(BigRow(f"sluice status (up to date), {n:,}-stage chain", t.seconds), t, None))
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    return rows


def bench_wide(sluice: list[str], sizes: Sequence[int], inputs: int) -> list[BigRow]:
    """`sluice validate` of wide specs: N stages all feeding one stage, and one stage with many inputs.

    Time should grow linearly with N (compile once had a list-membership loop per fan-in edge).
    """
    env = clean_env()
    specs = [(f"sluice validate, fan-in of {n:,} stages into one", sluice_yaml("fanout", n)) for n in sizes]
    if inputs:
        specs.append((f"sluice validate, one stage with {inputs:,} inputs", many_inputs_yaml(inputs)))
    rows: list[BigRow] = []
    for what, text in specs:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-wide-") as tmp:
            ws = Path(tmp)
            (ws / "pipeline.yaml").write_text(text)
            t = best_of(3, lambda ws=ws: timed([*sluice, "validate", "pipeline.yaml"], ws, env, timeout=600))
            rows.append(_verdict(BigRow(what, t.seconds), t, None, f"cpu {t.cpu:.3f} s; {len(text) / 1e6:.1f} MB spec"))
            print(f"  {what}: {fmt_s(t.seconds if t.ok else None)} s (cpu {t.cpu:.3f} s)", flush=True)
    return rows


def _verdict(row: BigRow, t: Timed, target: float | None, note: str = "") -> BigRow:
    if not t.ok:
        why = "RecursionError" if "RecursionError" in t.stderr else tail(t.stderr or t.stdout, 2)
        row.verdict, row.note = "FAIL", f"exit {t.rc}: {why}"
        return row
    if target is not None:
        row.target = f"≤ {target:g} s"
        row.verdict = "ok" if t.seconds <= target else "MISS"
    else:
        row.verdict = "ok"
    row.note = note
    return row


def bench_hash(mib: int) -> list[BigRow]:
    """hash_file throughput from page cache, and HashCache.reads on unchanged files."""
    from sluice.engine.fingerprint import RACY_NS, HashCache, hash_file

    rows: list[BigRow] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-hash-") as tmp:
        root = Path(tmp)
        big = root / "big.bin"
        block = os.urandom(1 << 20)
        with open(big, "wb") as f:
            for _ in range(mib):
                f.write(block)
        size = big.stat().st_size
        with open(big, "rb") as f:  # into the page cache
            while f.read(1 << 24):
                pass
        hash_file(big)  # warm
        best = min(_time(lambda: hash_file(big)) for _ in range(3))
        gbs = size / best / 1e9
        rows.append(
            BigRow(
                f"hash_file, {mib} MiB, warm page cache",
                best,
                f"≥ {HASH_TARGET_GBS:g} GB/s",
                "ok" if gbs >= HASH_TARGET_GBS else "MISS",
                f"{gbs:.2f} GB/s ({size / best / 2**30:.2f} GiB/s)",
            )
        )

        import blake3

        one = min(_time(lambda: blake3.blake3(max_threads=1).update_mmap(big).hexdigest()) for _ in range(2))
        rows.append(BigRow("blake3 single thread (mmap), baseline", one, note=f"{size / one / 1e9:.2f} GB/s"))

        # An old file: hashed once, then never read again, in the same process or a new one.
        # utime sets ctime to now, and the racy rule counts ctime too: wait out the window.
        old = time.time() - 3600
        os.utime(big, (old, old))
        time.sleep(RACY_NS / 1e9 + 0.1)
        db = root / "hashes.db"
        hc = HashCache(db, root)
        t_first = _time(lambda: hc.digest("big.bin"))
        first_reads = hc.reads
        hc.save()
        t_again = _time(lambda: hc.digest("big.bin"))
        same_reads = hc.reads - first_reads
        hc2 = HashCache(db, root)
        t_new = _time(lambda: hc2.digest("big.bin"))
        ok = first_reads == 1 and same_reads == 0 and hc2.reads == 0
        rows.append(BigRow("HashCache.digest, old file, first time", t_first, note=f"reads={first_reads}"))
        rows.append(
            BigRow("HashCache.digest again, same process", t_again, "reads = 0", "ok" if same_reads == 0 else "FAIL", f"reads={same_reads}")
        )
        rows.append(
            BigRow(
                "HashCache.digest again, new process (SQLite)", t_new, "reads = 0", "ok" if hc2.reads == 0 else "FAIL", f"reads={hc2.reads}"
            )
        )
        if not ok:
            rows[-1].note += " — an unchanged file was read again"

        # A file written just now is re-checked until it is older than the racy window (as git does).
        fresh = root / "fresh.txt"
        fresh.write_text("x")
        hc3 = HashCache(root / "h3.db", root)
        hc3.digest("fresh.txt")
        hc3.digest("fresh.txt")
        rows.append(
            BigRow("HashCache, file modified < 2 s ago, digested twice", None, note=f"reads={hc3.reads} (racy re-check, by design)")
        )
    return rows


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- printing


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def print_runs(rows: list[RunRow], fixed: float) -> None:
    headers = [
        "tool",
        "shape",
        "N",
        "stages",
        "first run s",
        "no-op s",
        "no-op cpu s",
        "after change s",
        "bare cmds s",
        "overhead ms/stage",
        "net of startup",
        "verdict",
    ]
    body = []
    for r in rows:
        verdict = []
        if r.error:
            verdict.append(f"FAIL: {r.error}")
        if r.tool == "sluice" and not r.error:
            if r.n >= 1000 and r.noop is not None:
                verdict.append(f"no-op {'ok' if r.noop <= NOOP_TARGET_S else 'MISS'}")
            net = r.overhead_ms(fixed)
            if net is not None:
                verdict.append(f"overhead {'ok' if net <= OVERHEAD_TARGET_MS else 'MISS'}")
        verdict += r.notes
        body.append(
            [
                r.tool,
                r.shape,
                str(r.n),
                str(r.stages),
                fmt_s(r.first),
                fmt_s(r.noop),
                fmt_s(r.noop_cpu),
                fmt_s(r.change),
                fmt_s(r.bare),
                fmt_ms(r.overhead_ms()),
                fmt_ms(r.overhead_ms(fixed) if r.tool == "sluice" else None),
                "; ".join(verdict),
            ]
        )
    print(table(headers, body))


def print_ratios(rows: list[RunRow]) -> None:
    mine = {(r.shape, r.n): r for r in rows if r.tool == "sluice"}
    headers = ["tool", "shape", "N", "first run ×", "no-op ×", "after change ×", "overhead ×"]
    body = []

    def ratio(a: float | None, b: float | None) -> str:
        return "—" if a is None or b is None or b <= 0 else f"{a / b:.1f}"

    for r in rows:
        s = mine.get((r.shape, r.n))
        if r.tool == "sluice" or s is None:
            continue
        body.append(
            [
                r.tool,
                r.shape,
                str(r.n),
                ratio(r.first, s.first),
                ratio(r.noop, s.noop),
                ratio(r.change, s.change),
                ratio(r.overhead_ms(), s.overhead_ms()),
            ]
        )
    if body:
        print("\nRatios: other tool's time ÷ sluice's (above 1 means sluice is faster)")
        print(table(headers, body))


def print_big(rows: list[BigRow]) -> None:
    print(
        table(["measure", "seconds", "target", "verdict", "note"], [[r.name, fmt_s(r.seconds), r.target, r.verdict, r.note] for r in rows])
    )


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000", help="stage counts per shape (default: 10,100,1000)")
    ap.add_argument("--quick", action="store_true", help="sizes 10,100 only; smaller big-spec and hash runs")
    ap.add_argument("--jobs", type=int, default=1, help="sluice run --jobs for the shapes (default 1: serial, like -j1)")
    ap.add_argument("--big", type=int, default=10_000, help="stages in the validate/dag/status chain (default 10000)")
    ap.add_argument("--big-run", action="store_true", help="also `sluice run` the big chain (slow: one process per stage)")
    ap.add_argument("--wide", default="5000,20000", help="fan-in widths for the wide validate rows (default 5000,20000)")
    ap.add_argument("--wide-inputs", type=int, default=5000, help="inputs of the one-stage wide row (default 5000; 0 skips)")
    ap.add_argument("--hash-mib", type=int, default=1024, help="size of the hashed file in MiB (default 1024)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: runs,big,wide,hash")
    ap.add_argument("--compare", action="store_true", help="also run DVC and Snakemake, installed into their own venvs")
    ap.add_argument("--compare-sizes", help="sizes for --compare (default: --sizes)")
    ap.add_argument("--tools", default="dvc,snakemake", help="tools for --compare (default dvc,snakemake)")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sluice-bench", help="where --compare keeps its venvs")
    ap.add_argument("--install-timeout", type=float, default=600, help="seconds allowed for each pip install")
    ap.add_argument("--tool-timeout", type=float, default=1200, help="seconds allowed for each DVC/Snakemake command")
    ap.add_argument("--sluice", help="command to run sluice (default: the entry point beside this Python)")
    ap.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the generated workspaces")
    ap.add_argument("--workdir", type=Path, help="where to create the temporary workspaces (default: $TMPDIR or /tmp)")
    args = ap.parse_args(argv)
    compile_sources()

    sizes = [10, 100] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        args.big, args.hash_mib = min(args.big, 2000), min(args.hash_mib, 256)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sluice = sluice_argv(args)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(args.workdir)
    load = os.getloadavg()
    print(
        f"sluice benchmark · {' '.join(sluice)} · Python {sys.version.split()[0]} · {os.cpu_count()} CPUs · "
        f"load avg {load[0]:.2f} {load[1]:.2f} · jobs {args.jobs}"
    )
    probe = fs_probe()
    print(f"workspaces in {tempfile.gettempdir()}: {probe}")
    print("Wall times by time.perf_counter around the real CLI; no-op is the best of 3.\n", flush=True)
    results: dict[str, object] = {"sluice": sluice, "loadavg": load, "jobs": args.jobs, "workdir": tempfile.gettempdir(), "fs": probe}

    runs: list[RunRow] = []
    fixed = 0.0
    bare: dict[tuple[str, int], float] = {}
    if "runs" not in skip:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-fixed-") as tmp:
            ws = Path(tmp)
            (ws / "pipeline.yaml").write_text(sluice_yaml("chain", 1))
            write_source(ws, 0)
            argv_run = [*sluice, "run", "-f", "pipeline.yaml", "--jobs", "1", "--json"]
            timed(argv_run, ws, clean_env())
            fixed = best_of(3, lambda: timed(argv_run, ws, clean_env())).seconds
        print(f"fixed cost (no-op `sluice run` of a 1-stage pipeline, best of 3): {fixed:.3f} s\n", flush=True)
        results["fixed_seconds"] = fixed
        for shape in SHAPES:
            for n in sizes:
                bare[(shape, n)] = bare_commands(shape, n)
                row = bench_sluice(sluice, shape, n, args.jobs, bare[(shape, n)], args.keep)
                runs.append(row)
                print(
                    f"  sluice {shape:6} N={n:<5} first {fmt_s(row.first)} s  no-op {fmt_s(row.noop)} s  "
                    f"change {fmt_s(row.change)} s  {row.error}",
                    flush=True,
                )

    if args.compare:
        csizes = [int(s) for s in args.compare_sizes.split(",")] if args.compare_sizes else sizes
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        for tool in [t.strip() for t in args.tools.split(",") if t.strip()]:
            why = install_tool(args.cache_dir, tool, args.install_timeout)
            if why:
                print(f"  {tool}: skipped — {why}", flush=True)
                results[f"{tool}_skipped"] = why
                continue
            for shape in SHAPES:
                for n in csizes:
                    b = bare.get((shape, n)) or bare_commands(shape, n)
                    row = bench_tool(args.cache_dir, tool, shape, n, b, args.tool_timeout, args.keep)
                    runs.append(row)
                    print(
                        f"  {tool} {shape:6} N={n:<5} first {fmt_s(row.first)} s  no-op {fmt_s(row.noop)} s  "
                        f"change {fmt_s(row.change)} s  {row.error}",
                        flush=True,
                    )

    if runs:
        print("\nPipelines of N trivial `cmd` stages (fan-out has N+1: the fan-in stage too)")
        print("overhead ms/stage = (first run − bare commands) ÷ stages; net of startup also subtracts the fixed cost above\n")
        print_runs(runs, fixed)
        print_ratios(runs)
        results["runs"] = [r.__dict__ | {"overhead_ms": r.overhead_ms(), "net_overhead_ms": r.overhead_ms(fixed)} for r in runs]

    big_rows: list[BigRow] = []
    if "big" not in skip:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-small-") as tmp:
            small = Path(tmp) / "pipeline.yaml"
            small.write_text(sluice_yaml("chain", 10))
            write_source(Path(tmp), 0)
            big_rows += bench_big(sluice, args.big, small, args.big_run, args.jobs)
    if "wide" not in skip:
        wide = [int(s) for s in args.wide.split(",") if s.strip()]
        big_rows += bench_wide(sluice, [min(w, 2000) for w in wide] if args.quick else wide, args.wide_inputs)
    if "hash" not in skip:
        big_rows += bench_hash(args.hash_mib)
    if big_rows:
        print()
        print_big(big_rows)
        results["other"] = [r.__dict__ for r in big_rows]
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1, default=str))
    failed = any(r.error for r in runs if r.tool == "sluice") or any(r.verdict == "FAIL" for r in big_rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
