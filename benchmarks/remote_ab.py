"""Two versions of Sluice restoring from one remote, in alternating rounds, beside the s3fs script.

    python benchmarks/remote_ab.py HEAD~3 .                  # a revision against the working tree
    python benchmarks/remote_ab.py c4afd8f HEAD --rounds 9 --case big
    python benchmarks/remote_ab.py . --case both              # one version: only its ratio to the script

Each version is a source tree: `.` is this checkout as it stands (uncommitted edits included),
anything else a git revision, exported with `git archive`. On one SeaweedFS server on 127.0.0.1,
each version runs the benchmark pipeline once and pushes it (under its own prefix, so a version
never reads what another wrote), then every round times, in turn, a fresh checkout's
`sluice run --remote` with each version and the s3fs script of remote_bench.py getting the same
objects. On this shared 2-core machine one command can take half as long again from one hour to the
next; run by turns, every version meets the same hour. Prints each version's median, its ratio to
the script's median (the issue's figure: script / sluice, target >= 0.8x), and the ratios paired round by round with their median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiled import compile_sources  # noqa: E402  (beside this script)
from remote_bench import Rounds, _fresh, _pipeline, _run_json, s3fs_script  # noqa: E402

from tests.support.s3servers import KEY, SECRET, seaweedfs  # noqa: E402

CASES = {"chain": (100, 1_000_000, "100 x 1 MB"), "big": (1, 1_000_000_000, "1 x 1 GB")}


@dataclass(frozen=True)
class Version:
    label: str
    tree: Path


def _export(rev: str, dest: Path) -> Version:
    """`rev` as a source tree: this checkout for `.`, else the revision unpacked from git."""
    if rev == ".":
        compile_sources(ROOT)
        return Version("working tree", ROOT)
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    compile_sources(dest)
    return Version(sha, dest)


def _sluice(version: Version, folder: Path) -> tuple[float, set[str]]:
    """Seconds of `sluice run --remote team` in `folder` with `version`, and the outcomes of its stages."""
    t0 = time.perf_counter()
    summary = _run_json(folder, "-j", "4", "--remote", "team", tree=version.tree)
    return time.perf_counter() - t0, {s["outcome"] for s in summary["stages"].values()}


def _case(tmp: Path, endpoint: str, versions: list[Version], case: str, rounds: int) -> None:
    import s3fs

    n, size, label = CASES[case]
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"}, key=KEY, secret=SECRET)
    sources: list[Path] = []
    for i, version in enumerate(versions):
        ws = tmp / f"{case}-{i}"
        _pipeline(ws, n, size, f"s3://sluice-bench/{case}-{i}", endpoint)
        _sluice(version, ws)  # runs every stage and pushes it
        shutil.rmtree(ws / ".sluice")  # the checkouts are fresh: the local cache stays behind
        sources.append(ws)
    keys = tmp / "keys.txt"
    keys.write_text("\n".join(k for k in fs.find(f"sluice-bench/{case}-0/objects")))
    times: list[list[float]] = [[] for _ in versions]
    script: list[float] = []
    folders = Rounds(tmp / f"{case}-rounds", keep=n * size < 2**30)
    for r in range(rounds):
        order = list(enumerate(versions))
        for i, version in order if r % 2 == 0 else order[::-1]:  # turn about: no version always goes first
            fresh = folders.next("fresh")
            _fresh(sources[i], fresh)
            seconds, outcomes = _sluice(version, fresh)
            if outcomes != {"restored"}:
                raise SystemExit(f"{version.label}: a fresh checkout's stages were {sorted(outcomes)}, not all restored")
            times[i].append(seconds)
            folders.done(fresh)
        script.append(s3fs_script(endpoint, keys, folders))
    folders.close()
    s = statistics.median(script)
    print(f"{label}, {rounds} alternating rounds: s3fs script median {s:.2f} s")
    for version, ts in zip(versions, times, strict=True):
        m = statistics.median(ts)
        ratios = [a / b for a, b in zip(script, ts, strict=True)]
        print(
            f"  {version.label:>14}: median {m:.2f} s, ratio {s / m:.2f}x (target >= 0.8x);"
            f" per round: {' '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f}x"
        )
    for ws in sources:
        shutil.rmtree(ws, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revs", nargs="+", help="git revisions, or `.` for this checkout as it stands")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--case", choices=(*CASES, "both"), default="chain")
    ap.add_argument("--workdir", type=Path, help="where the workspaces go (the server's data stays in /tmp)")
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as server_tmp,
        tempfile.TemporaryDirectory(dir=args.workdir) as tmp_name,
        tempfile.TemporaryDirectory() as trees,
    ):
        tmp = Path(tmp_name)
        versions = [_export(rev, Path(trees) / str(i)) for i, rev in enumerate(args.revs)]
        with seaweedfs(Path(server_tmp) / "seaweedfs", ("sluice-bench",)) as endpoint:
            for case in CASES if args.case == "both" else (args.case,):
                _case(tmp, endpoint, versions, case, args.rounds)


if __name__ == "__main__":
    main()
