"""Remote cache benchmark (issue 11) against a real SeaweedFS S3 server on 127.0.0.1.

    python benchmarks/remote_bench.py                 # no-op, 100 x 1 MB and 1 x 1 GB restores
    python benchmarks/remote_bench.py --big-mb 0      # without the 1 GB figure
    python benchmarks/remote_bench.py --repeat 5
    python benchmarks/remote_bench.py --workdir /mnt/btrfs   # workspaces where reflinks work
    python benchmarks/remote_bench.py --dvc ~/.cache/sluice-bench/dvc-s3/bin/dvc   # also DVC's own pull

Prints (the ratio of the medians, and the median of the ratios paired round by round):
- the no-op `sluice run --remote` of a 100-stage chain next to a local no-op (target <= 1.2x:
  nothing is contacted when the local cache hits);
- for 100 x 1 MB outputs and for one 1 GB output, a fresh checkout restoring everything through
  `sluice run --remote`, next to s3fs's own batched `get` of the same objects, twice:
  * `script`: a fresh Python process that imports s3fs, connects and gets the objects by their
    keys (given to it: no listing), which is what a hand-written restore step costs; the
    like-for-like figure, since the sluice command also starts from nothing;
  * `in-process`: the get alone, in an already warm process (no interpreter, import or
    connection): the transfer floor.
  Sluice's figure is the whole command: start-up, planning with its lookups (an entry GET and a
  HEAD per stage), the downloads, the BLAKE3 check of every byte, and the copy into the workspace.
Each round times every contender in turn (sluice, the local restore, the script, the in-process
get, dvc), and the medians are over rounds: this machine's speed drifts by half from one minute
to the next, so contenders timed in separate stretches would compare two machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiled import compile_sources  # noqa: E402  (beside this script)

from tests.support.s3servers import KEY, SECRET, seaweedfs  # noqa: E402

ENV = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}


def _pipeline(folder: Path, n: int, size: int, url: str, endpoint: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "stages:"]
    for i in range(n):
        # each output is `size` bytes, distinct per stage (its own seed), from its upstream's output
        lines += [
            f"  s{i}:",
            f"    cmd: (cat {'${inputs.i}' if i else '/dev/null'}; head -c {size} /dev/urandom) | tail -c {size} > ${{outputs.o}}",
            f"    outputs: {{o: out/s{i}.bin}}",
        ]
        if i:
            lines.append(f"    inputs: {{i: '${{stages.s{i - 1}.outputs.o}}'}}")
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    (folder / "sluice.remotes.yaml").write_text(f"version: 1\nremotes:\n  team:\n    url: {url}\n    endpoint_url: {endpoint}\n")


def _sluice(folder: Path, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "run", "-j", "4", *args], cwd=folder, env=ENV, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return time.perf_counter() - t0


def _fresh(src: Path, dest: Path) -> None:
    """What a fresh clone of `src` has (no outputs, no .sluice), in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pipeline.yaml", "sluice.remotes.yaml", "sluice.lock"):
        shutil.copy2(src / name, dest / name)


@dataclass
class Rounds:
    """Where each round's files go (a fresh checkout, s3fs's copies).

    ext4 skips an inode it freed in the last minute when it allocates one, scanning on: just after
    the last round's files were deleted, that scan was a fifth of a 100-stage restore's CPU (perf:
    recently_deleted, find_inode_bit), and a restore makes several files and folders per stage where
    the script makes one. A fresh clone in CI follows no such delete. So with `keep` each round gets
    a new folder, deleted only once the case is done; without it (one big output: keeping gigabytes
    of dirty pages would have the kernel write them back during later rounds) each is deleted as
    soon as it is measured. Either way the disk is synced after each round, outside the timing, so no
    round pays for writing back what an earlier one wrote."""

    root: Path
    keep: bool
    made: int = 0

    def next(self, name: str) -> Path:
        self.made += 1
        folder = self.root / f"{name}-{self.made}"
        folder.mkdir(parents=True)
        return folder

    def done(self, folder: Path) -> None:
        if not self.keep:
            shutil.rmtree(folder)
        os.sync()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_SCRIPT = """
import sys, s3fs
endpoint, dest, keys_file = sys.argv[1:4]
keys = open(keys_file).read().split()
fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
fs.get(keys, [f"{dest}/{i}" for i in range(len(keys))])
"""


def _run_json(folder: Path, *args: str, tree: Path = ROOT) -> dict[str, Any]:
    """The JSON summary of `sluice run --json ARGS` in `folder`, with Sluice's sources from `tree`."""
    env = {**ENV, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "sluice", "run", "--json", *args]
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return cast(dict[str, Any], json.loads(proc.stdout))


def _restore_round(ws: Path, rounds: Rounds) -> tuple[float, float]:
    """Seconds of a fresh checkout's `sluice run --remote`, and of the same restore from the local cache
    alone (outputs moved away, no remote: the engine's own work)."""
    fresh = rounds.next("fresh")
    _fresh(ws, fresh)
    remote = _sluice(fresh, "--remote", "team")
    outcomes = {s["outcome"] for s in _run_json(fresh)["stages"].values()}
    assert outcomes == {"skipped"}, outcomes  # everything was restored: now up to date
    (fresh / "out").rename(fresh / "out.moved")  # not deleted: see Rounds
    t0 = time.perf_counter()
    outcomes = {s["outcome"] for s in _run_json(fresh, "-j", "4")["stages"].values()}
    local = time.perf_counter() - t0
    assert outcomes == {"restored"}, outcomes
    rounds.done(fresh)
    return remote, local


def _requests(ws: Path, rounds: Rounds) -> dict[str, int]:
    """The requests a fresh checkout's `sluice run --remote` makes, by verb."""
    fresh = rounds.next("fresh")
    _fresh(ws, fresh)
    requests: dict[str, int] = _run_json(fresh, "--remote", "team")["remote"]["requests"]
    rounds.done(fresh)
    return requests


def _in_process_get(fs: Any, keys: list[str], rounds: Rounds) -> float:
    """Seconds of s3fs's batched get of `keys` in this (warm) process."""
    dest = rounds.next("s3fs-get")
    t0 = time.perf_counter()
    fs.get(keys, [str(dest / str(i)) for i in range(len(keys))])
    seconds = time.perf_counter() - t0
    rounds.done(dest)
    return seconds


def s3fs_script(endpoint: str, keys: Path, rounds: Rounds) -> float:
    """Seconds of the s3fs script getting the objects named in `keys` into a new folder."""
    dest = rounds.next("s3fs-script")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _SCRIPT, endpoint, str(dest), str(keys)], env=ENV, check=True)
    seconds = time.perf_counter() - t0
    rounds.done(dest)
    return seconds


def _dvc_repo(dvc: Path, tmp: Path, endpoint: str, n: int, size: int) -> Callable[[Rounds], float]:
    """A DVC project with the same n stages, run and pushed to the same server; and the seconds of one
    `dvc pull` into a fresh clone of it: DVC's own remote cache, read from its lock (dvc.lock), with its own checks."""
    repo = tmp / f"dvc-repo-{n}"  # removed with tmp
    repo.mkdir()
    env = {**ENV, "DVC_NO_ANALYTICS": "1", "PATH": f"{dvc.parent}{os.pathsep}{os.environ.get('PATH', '')}", "GIT_AUTHOR_NAME": "b"}
    env |= {"GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}

    def sh(*cmd: str, cwd: Path = repo) -> None:
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)

    lines = ["stages:"]
    for i in range(n):
        upstream = f"cat out/s{i - 1}.bin; " if i else ""
        lines += [f"  s{i}:", f"    cmd: ({upstream}head -c {size} /dev/urandom) | tail -c {size} > out/s{i}.bin"]
        lines += ([f"    deps: [out/s{i - 1}.bin]"] if i else []) + [f"    outs: [out/s{i}.bin]"]
    (repo / "dvc.yaml").write_text("\n".join(lines) + "\n")
    (repo / "out").mkdir()
    (repo / "out" / ".gitkeep").write_text("")
    sh("git", "init", "-q")
    sh(str(dvc), "init", "-q")
    sh(str(dvc), "remote", "add", "-d", "team", f"s3://sluice-bench/dvc-{n}")
    sh(str(dvc), "remote", "modify", "team", "endpointurl", endpoint)
    sh(str(dvc), "repro", "-q")
    sh(str(dvc), "push", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "pipeline")

    def pull(rounds: Rounds) -> float:
        clone = rounds.next("clone")
        sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp)
        t0 = time.perf_counter()
        sh(str(dvc), "pull", "-q", cwd=clone)
        seconds = time.perf_counter() - t0
        assert all((clone / "out" / f"s{i}.bin").stat().st_size == size for i in range(n))
        rounds.done(clone)
        return seconds

    return pull


def _figure(label: str, mb: float, restore: float, local: float, script: float, warm: float, requests: dict[str, int]) -> None:
    asked = ", ".join(f"{n} {verb}" for verb, n in sorted(requests.items()))
    print(
        f"restore {label}: sluice run --remote {mb / restore:.0f} MB/s ({restore:.2f} s, whole command; {asked});"
        f" s3fs script {mb / script:.0f} MB/s ({script:.2f} s), ratio {script / restore:.2f}x (target >= 0.8x);"
        f" s3fs in-process get {mb / warm:.0f} MB/s ({warm:.2f} s), ratio {warm / restore:.2f}x"
    )
    # What the command must do besides the transfer, done alone: when it cannot overlap the script's work
    # (one interpreter, one core's worth of Python), script + this is the floor, and script / floor the ratio's ceiling.
    print(
        f"  the same restore from the local cache (outputs deleted, no remote): {local:.2f} s;"
        f" script + that = {script + local:.2f} s, a ratio of {script / (script + local):.2f}x if nothing overlapped"
    )


def _measure(tmp: Path, endpoint: str, name: str, n: int, size: int, repeat: int, label: str, noop: bool, dvc: Path | None) -> None:
    import s3fs

    url = f"s3://sluice-bench/{name}"
    ws = tmp / name
    _pipeline(ws, n, size, url, endpoint)
    _sluice(ws, "--remote", "team")  # runs every stage and pushes it
    if noop:
        local = statistics.median(_sluice(ws) for _ in range(repeat))
        remote = statistics.median(_sluice(ws, "--remote", "team") for _ in range(repeat))
        print(f"no-op {n}-stage chain: local {local:.3f} s, --remote {remote:.3f} s, ratio {remote / local:.2f}x (target <= 1.2x)")
    rounds = Rounds(tmp / f"{name}-rounds", keep=size * n < 2**30)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"}, key=KEY, secret=SECRET)
    keys = list(fs.find(f"sluice-bench/{name}/objects"))
    listed = tmp / f"{name}-keys.txt"
    listed.write_text("\n".join(keys))
    pull = _dvc_repo(dvc, tmp, endpoint, n, size) if dvc is not None else None
    # Round by round, each contender in turn: this machine's speed drifts by half from one minute to the next.
    figures: dict[str, list[float]] = {"remote": [], "local": [], "script": [], "warm": [], "dvc": []}
    for _ in range(repeat):
        figures["remote"].append((round_ := _restore_round(ws, rounds))[0])
        figures["local"].append(round_[1])
        figures["script"].append(s3fs_script(endpoint, listed, rounds))
        figures["warm"].append(_in_process_get(fs, keys, rounds))
        if pull is not None:
            figures["dvc"].append(pull(rounds))
    requests = _requests(ws, rounds)
    rounds.close()
    med = {k: statistics.median(v) for k, v in figures.items() if v}
    mb = sum(fs.size(k) for k in keys) / 1e6
    _figure(label, mb, med["remote"], med["local"], med["script"], med["warm"], requests)
    ratios = [a / b for a, b in zip(figures["script"], figures["remote"], strict=True)]
    # paired by round, so the machine's drift cancels; the ratio of the medians above pairs a fast round with a slow one
    print(f"  script / sluice, round by round: {' '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x")
    shutil.rmtree(ws, ignore_errors=True)
    if "dvc" in med:
        dvc_s = med["dvc"]
        print(f"  and dvc pull into a fresh clone: {mb / dvc_s:.0f} MB/s ({dvc_s:.2f} s); sluice / dvc speed {dvc_s / med['remote']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=1000, help="size of the single big output in MB (0: skip it)")
    ap.add_argument("--dvc", type=Path, help="a dvc executable with S3 support (pip install 'dvc[s3]'): also time `dvc pull`")
    ap.add_argument(
        "--workdir", type=Path, help="where the workspaces and s3fs's copies go (e.g. a btrfs mount); the server's data stays in /tmp"
    )
    args = ap.parse_args()
    compile_sources()
    with tempfile.TemporaryDirectory() as server_tmp, tempfile.TemporaryDirectory(dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        with seaweedfs(Path(server_tmp) / "seaweedfs", ("sluice-bench",)) as endpoint:
            _measure(tmp, endpoint, "chain", 100, 1_000_000, args.repeat, "100 x 1 MB", noop=True, dvc=args.dvc)
            if args.big_mb:
                _measure(
                    tmp,
                    endpoint,
                    "big",
                    1,
                    args.big_mb * 1_000_000,
                    args.repeat,
                    f"1 x {args.big_mb / 1000:g} GB",
                    noop=False,
                    dvc=args.dvc,
                )


if __name__ == "__main__":
    main()
