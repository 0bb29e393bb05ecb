"""serve.smoke: proves the model server answers like the model, fast enough, without Docker or a cluster."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import Plugin, Port, StageContext, StageFailed, write_json
from sluice.stages._tables import input_anchor, input_path, output_path, read_table

if TYPE_CHECKING:
    import httpx


class SmokeStage(Plugin):
    name = "serve.smoke"
    version = "1"
    config_schema = schemas.load("stages/serve.smoke")
    inputs = (Port("model", desc="a model directory from sklearn.train"), Port("data", desc="sample rows to send"))
    outputs = (Port("report", desc="JSON smoke report, replayable by k8s.deploy", keep_on_failure=True),)

    def run(self, ctx: StageContext) -> None:
        from sluice.stages.serving.model import ModelError, load_model

        cfg = self.with_defaults(ctx.config)
        model_dir = input_path(ctx, "model")
        try:
            model = load_model(model_dir, cfg.get("expect_sha256"), input_anchor(ctx, "model"))
        except ModelError as exc:
            raise StageFailed(str(exc)) from exc
        frame = read_table(input_path(ctx, "data"), "sample")
        names = [f.name for f in model.metadata.features]
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise StageFailed(f"the sample table lacks feature columns: {', '.join(missing)}")
        sample = frame[names].head(int(cfg["rows"]))
        offline = model.predict(sample.to_dict(orient="records"))
        records = [_jsonable(r) for r in sample.to_dict(orient="records")]
        import httpx

        with (
            # The server rereads the directory: it must find the bytes verified here (their sha256 equals model_hash).
            _Server(model_dir, float(cfg["startup_timeout"]), ctx, model.metadata.model_hash) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            result = exercise(client, records, offline, model.metadata.task, cfg)
        result.update(model_version=model.metadata.version, task=model.metadata.task)
        write_json(output_path(ctx, "report"), result)
        ctx.log.info("%d rows: p95 %.1f ms, mismatches %d", len(records), result["latency_ms"]["p95"], len(result["mismatches"]))
        if not result["passed"]:
            raise StageFailed("serve.smoke failed: " + "; ".join(result["failures"]), _mismatch_table(result["mismatches"]))


def exercise(
    client: httpx.Client, records: Sequence[Mapping[str, Any]], expected: Sequence[Any], task: str, cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """Sends each record alone (timed), then all at once; compares with `expected`.

    Shared with k8s.deploy, whose client reaches a preview Service through the API server proxy.
    """
    latencies: list[float] = []
    online: list[Any] = []
    failures: list[str] = []
    for record in records:
        start = time.perf_counter()
        response = client.post("/predict", json=[record])
        latencies.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            failures.append(f"/predict answered {response.status_code}: {response.text[:300]}")
            break
        online.extend(response.json()["predictions"])
    if not failures and cfg.get("batch", True):
        response = client.post("/predict", json=list(records))
        if response.status_code != 200 or response.json()["predictions"] != online:
            failures.append(f"the batch request disagreed with single-row requests ({response.status_code})")
    mismatches = [
        {"row": i, "online": got, "offline": want}
        for i, (got, want) in enumerate(zip(online, expected, strict=False))
        if not _same(got, want, task, float(cfg.get("tolerance", 1e-9)))
    ]
    if mismatches:
        failures.append(f"{len(mismatches)} of {len(expected)} online predictions differ from offline ones")
    latency = _summary(latencies)
    budget = float(cfg.get("latency_budget_ms", 250))
    if latencies and latency["p95"] > budget:
        failures.append(f"p95 latency {latency['p95']:.1f} ms exceeds the budget of {budget:g} ms")
    return {
        "passed": not failures,
        "failures": failures,
        "rows": len(records),
        "latency_ms": latency,
        "latency_budget_ms": budget,
        "mismatches": mismatches[:20],
        "cases": [{"record": r, "prediction": p} for r, p in zip(records, expected, strict=True)],
    }


def _same(got: Any, want: Any, task: str, tol: float) -> bool:
    if task == "regression" and isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return math.isclose(got, want, rel_tol=tol, abs_tol=tol)
    return bool(got == want)


def _summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

    return {"p50": pct(0.5), "p95": pct(0.95), "max": round(ordered[-1], 3)}


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    """NaN → null (JSON has no NaN); numpy scalars → Python numbers."""
    out = {}
    for key, value in record.items():
        value = value.item() if hasattr(value, "item") else value
        out[str(key)] = None if isinstance(value, float) and math.isnan(value) else value
    return out


def _mismatch_table(mismatches: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'row':>5}  {'online':>12}  {'offline':>12}"]
    lines += [f"{m['row']:>5}  {m['online']!s:>12}  {m['offline']!s:>12}" for m in mismatches]
    return "\n".join(lines) if mismatches else ""


class _Server:
    """The serving app in a child process on a free port; its log tail explains a failed start."""

    def __init__(self, model_dir: Path, startup_timeout: float, ctx: StageContext, expected_sha256: str | None = None):
        self.model_dir, self.timeout, self.ctx, self.expected = model_dir, startup_timeout, ctx, expected_sha256
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the server: _tail reads it after __exit__)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        import httpx

        port = _free_port()
        cmd = [sys.executable, "-m", "sluice.stages.serving", str(self.model_dir), "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--expect-sha256", self.expected] if self.expected else []
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StageFailed(f"the model server exited with code {self.proc.returncode} before it was ready", self._tail())
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    self.ctx.log.info("model server ready at %s", url)
                    return url
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        self.__exit__()
        raise StageFailed(f"the model server was not ready within {self.timeout:g} s", self._tail())

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _tail(self, lines: int = 30) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
