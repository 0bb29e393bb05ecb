"""Remote cache benchmark (issue 11) against a real SeaweedFS S3 server on 127.0.0.1.

    python benchmarks/remote_bench.py            # 100-stage chain no-op; 100 x 1 MB restore vs s3fs get
    python benchmarks/remote_bench.py --repeat 5

Prints: the no-op `sluice run --remote` of a 100-stage chain next to a local no-op (target
<= 1.2x: nothing is fetched, nothing imported, when the local cache hits), and the restore
throughput of a fresh checkout pulling 100 x 1 MB outputs through `sluice run --remote` next to
s3fs's own batched `get` of the same objects (target >= 0.8x). Interpreter start and imports
are inside the sluice figures and outside the s3fs one, so the ratio is conservative.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("pipeline.yaml", "sluice.remotes.yaml", "sluice.lock"):
        shutil.copy2(src / name, dest / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with seaweedfs(tmp / "seaweedfs", ("sluice-bench",)) as endpoint:
            url = "s3://sluice-bench/chain"
            ws = tmp / "ws"
            _pipeline(ws, 100, 1_000_000, url, endpoint)
            _sluice(ws, "--remote", "team")  # runs all 100 and pushes them
            local = statistics.median(_sluice(ws) for _ in range(args.repeat))
            remote = statistics.median(_sluice(ws, "--remote", "team") for _ in range(args.repeat))
            print(f"no-op 100-stage chain: local {local:.3f} s, --remote {remote:.3f} s, ratio {remote / local:.2f}x (target <= 1.2x)")

            restores = []
            for _ in range(args.repeat):
                fresh = tmp / "fresh"
                _fresh(ws, fresh)
                restores.append(_sluice(fresh, "--remote", "team"))
            restore = statistics.median(restores)

            import s3fs

            fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"}, key=KEY, secret=SECRET)
            keys = list(fs.find("sluice-bench/chain/objects"))
            gets = []
            for _ in range(args.repeat):
                dest = tmp / "s3fs-get"
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()
                t0 = time.perf_counter()
                fs.get(keys, [str(dest / k.replace("/", "_")) for k in keys])
                gets.append(time.perf_counter() - t0)
            get = statistics.median(gets)
            mb = sum(fs.size(k) for k in keys) / 1e6
            print(
                f"restore 100 x 1 MB from the remote: sluice run --remote {mb / restore:.1f} MB/s ({restore:.2f} s, whole command),"
                f" s3fs get {mb / get:.1f} MB/s ({get:.2f} s), ratio {get / restore:.2f}x (target >= 0.8x)"
            )


if __name__ == "__main__":
    main()
