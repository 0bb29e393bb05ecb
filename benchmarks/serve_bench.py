"""The model server against a bare FastAPI app calling the same model, on 127.0.0.1 (issue 9).

Both run as their own process under uvicorn with h11, and are measured by the same clients:
  single     sequential 1-row requests on one keep-alive connection: rows/s, p50 and p95 latency;
  batch      sequential 1,000-row requests: rows/s;
  probes     /health polled every 50 ms while several threads send 8,000-row batches without
             pause: /health p50, p95 and max, and how many /predict answers were 200 and 503.
The bare app parses with `request.json()`, builds a DataFrame and predicts inside its `async def`
handler: no validation, no limits, no metrics, which is what the ratio prices.

    python benchmarks/serve_bench.py [--quick] [--rounds 3] [--model DIR] [--clients 6]

Without `--model`, a scaler + logistic regression on sklearn's breast-cancer data is trained into
a temporary directory (`tests/support/models.py`, the model the serving tests use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BARE_APP = """
import sys, joblib, pandas as pd, uvicorn
from fastapi import FastAPI, Request
model, columns = joblib.load(sys.argv[1]), sys.argv[3].split("\\t")
app = FastAPI()
@app.get("/health")
def health():
    return {"status": "ok"}
@app.get("/ready")
def ready():
    return {"ready": True}
@app.post("/predict")
async def predict(request: Request):
    records = await request.json()
    return {"predictions": model.predict(pd.DataFrame(records, columns=columns)).tolist()}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", http="h11")
"""


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {command}")


def measure(url: str, row: dict[str, Any], single: int, batches: int, clients: int, load_seconds: float) -> dict[str, float]:
    headers = {"content-type": "application/json"}
    one, thousand, heavy = (json.dumps(rows).encode() for rows in ([row], [row] * 1000, [row] * 8000))
    with httpx.Client(timeout=60) as client:
        latencies = []
        for _ in range(single):
            start = time.perf_counter()
            client.post(f"{url}/predict", content=one, headers=headers).raise_for_status()
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(batches):
            client.post(f"{url}/predict", content=thousand, headers=headers).raise_for_status()
        batch_seconds = time.perf_counter() - start
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                statuses.append(c.post(f"{url}/predict", content=heavy, headers=headers).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for t in threads:
        t.start()
    probes = []
    time.sleep(0.5)
    with httpx.Client(timeout=30) as client:
        until = time.monotonic() + load_seconds
        while time.monotonic() < until:
            start = time.perf_counter()
            client.get(f"{url}/health")
            probes.append(time.perf_counter() - start)
            time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    probes.sort()
    return {
        "single rows/s": single / sum(latencies),
        "single p50 ms": 1000 * statistics.median(latencies),
        "single p95 ms": 1000 * sorted(latencies)[int(0.95 * len(latencies))],
        "1,000-row batch rows/s": 1000 * batches / batch_seconds,
        "/health p50 ms under load": 1000 * statistics.median(probes),
        "/health p95 ms under load": 1000 * probes[int(0.95 * len(probes))],
        "/health max ms under load": 1000 * probes[-1],
        "predict 200s under load": statuses.count(200),
        "predict 503s under load": statuses.count(503),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model directory written by sklearn.train")
    parser.add_argument("--quick", action="store_true", help="fewer requests (~20 s in all)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds per server")
    parser.add_argument("--clients", type=int, default=6, help="threads sending 8,000-row batches during the probe test")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from sluice.stages.serving.model import load_model
    from tests.support.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.model is None:
        from tests.support.models import write_model_dir

        args.model = write_model_dir(work / "model")
    meta = load_model(args.model).metadata
    row = {f.name: 1.0 for f in meta.features}
    (work / "bare.py").write_text(BARE_APP)
    single, batches, seconds = (100, 10, 3.0) if args.quick else (1000, 50, 8.0)
    commands = {}
    for name in ("sluice", "bare FastAPI"):
        port = free_port()
        if name == "sluice":
            commands[name] = (port, [sys.executable, "-m", "sluice.stages.serving", str(args.model), "--port", str(port)])
        else:
            names = "\t".join(f.name for f in meta.features)
            commands[name] = (port, [sys.executable, str(work / "bare.py"), str(args.model / meta.model_file), str(port), names])
    # Both servers run at once and are measured in alternating rounds, so a busy machine's noise
    # lands on both sides of each ratio; the figures are medians over the rounds.
    procs = {name: start(command, port) for name, (port, command) in commands.items()}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    try:
        for r in range(args.rounds):
            order = list(commands) if r % 2 == 0 else list(reversed(commands))
            for name in order:
                rounds[name].append(measure(f"http://127.0.0.1:{commands[name][0]}", row, single, batches, args.clients, seconds))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
    results = {name: {key: statistics.median(m[key] for m in ms) for key in ms[0]} for name, ms in rounds.items()}
    print(f"medians of {args.rounds} alternating rounds")
    print(f"{'':28}{'sluice':>12}{'bare FastAPI':>14}{'ratio':>8}")
    for key in results["sluice"]:
        ours, bare = results["sluice"][key], results["bare FastAPI"][key]
        ratio = f"{ours / bare:8.2f}" if bare else f"{'':8}"
        print(f"{key:28}{ours:12.1f}{bare:14.1f}{ratio}")


if __name__ == "__main__":
    main()
