"""The FastAPI app: /predict, /health, /ready and /metrics for one verified model."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .model import LoadedModel, load_model
from .predict import neutral_record, nullable_features, predict_or_blame
from .records import MAX_PROBLEMS, RecordErrors, parse_json, validate_records

log = logging.getLogger("sluice.serving")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: thousands of rows; larger batches belong in a batch job
MAX_ROWS = 10_000
# Validation and prediction hold the GIL most of the time: a second thread only fights the event
# loop for it (measured, 6 clients of 8,000-row batches: /health p50 0.22 s with two threads,
# 0.04 s with one, and one thread also predicted more rows/s). Replicas add throughput. Requests
# past MAX_IN_FLIGHT get a 503 at once, which bounds memory (each holds up to MAX_BODY_BYTES).
PREDICT_THREADS = 1
MAX_IN_FLIGHT = 8
RETRY_AFTER_SECONDS = 1
BODY_TIMEOUT_SECONDS = 30.0  # a whole 1 MiB body at >= 35 KB/s; a slower sender gets a 408
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Metrics:
    """Per-app registry, so several apps in one process (tests) never share counters."""

    def __init__(self, version: str, estimator: str, task: str):
        self.registry = CollectorRegistry()
        self.version = version
        labels = ["endpoint", "method", "status", "model_version"]
        self.requests = Counter("sluice_http_requests", "HTTP requests by endpoint", labels, registry=self.registry)
        self.latency = Histogram(
            "sluice_http_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.server_errors = Counter(
            "sluice_http_server_errors", "5xx responses by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.predictions = Counter(
            "sluice_predictions", "Predictions by predicted class", ["class", "model_version"], registry=self.registry
        )
        info = Gauge("sluice_model_info", "The model being served", ["model_version", "estimator", "task"], registry=self.registry)
        info.labels(version, estimator, task).set(1)


_ENDPOINTS = frozenset({"/predict", "/health", "/ready", "/metrics"})


class _Observe:
    """Counts and times every request, and turns a fault of ours into a generic 500.

    Plain ASGI on purpose: `@app.middleware("http")` re-streams every request body through a
    queue, which cost more than validating a 1,000-row batch (benchmarks/serve_bench.py).
    """

    def __init__(self, app: Any, metrics: _Metrics, version: str):
        self.app, self.metrics, self.version = app, metrics, version

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
        start = time.perf_counter()
        status = 500
        started = False

        async def observed(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception:  # a fault of ours: logged in full, counted, and only a generic answer to the client
            log.exception("%s %s failed", scope["method"], endpoint)
            status = 500
            if not started:
                response = _error(500, ("server",), "internal server error; the server log has the details", "server_error")
                await response(scope, receive, send)
        finally:
            if status >= 500:
                self.metrics.server_errors.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint, self.version).observe(time.perf_counter() - start)
            self.metrics.requests.labels(endpoint, scope["method"], str(status), self.version).inc()


class _Admission:
    """Counts /predict requests in flight; touched only from the event loop, so no lock."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0

    def enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


def create_app(
    model_dir: Path,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_rows: int = MAX_ROWS,
    expected_sha256: str | None = None,
    predict_threads: int = PREDICT_THREADS,
    max_in_flight: int = MAX_IN_FLIGHT,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> FastAPI:
    """Loads and verifies the model now, so a tampered model stops the process before it listens.

    Parsing, validation and prediction run on a small thread pool, never on the event loop, so
    /health and /ready answer within the probes' timeout however heavy the batches are.
    """
    model = load_model(model_dir, expected_sha256)
    meta = model.metadata
    metrics = _Metrics(meta.version, str(meta.raw.get("estimator", "")), meta.task)
    nullable = nullable_features(model)
    readiness: dict[str, Any] = {"ready": False, "reason": "self-check not run yet"}

    admission = _Admission(max_in_flight)
    pool = ThreadPoolExecutor(max_workers=predict_threads, thread_name_prefix="predict")

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        readiness.update(await asyncio.get_running_loop().run_in_executor(pool, _self_check, model))
        log.info("model %s loaded; ready=%s", meta.version, readiness["ready"])
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Sluice model server", version=meta.version, lifespan=lifespan)

    app.add_middleware(_Observe, metrics=metrics, version=meta.version)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        body = {**readiness, "model_version": meta.version}
        return JSONResponse(body, status_code=200 if readiness["ready"] else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def answer(body: bytes) -> JSONResponse:
        """Runs on the pool: the CPU-heavy part of /predict."""
        try:
            payload = parse_json(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(422, ("body",), f"invalid JSON: {exc}", "value_error.jsondecode")
        except RecursionError:
            return _error(422, ("body",), "JSON nested too deeply", "value_error.jsondepth")
        try:
            records = validate_records(payload, meta.features, max_rows, MAX_PROBLEMS, nullable)
            predictions = predict_or_blame(model, records, MAX_PROBLEMS)
        except RecordErrors as exc:
            return JSONResponse({"detail": exc.errors, "problems": exc.total}, status_code=422)
        for label in predictions:
            metrics.predictions.labels(str(label) if meta.task == "classification" else "value", meta.version).inc()
        return JSONResponse({"predictions": predictions, "model_version": meta.version})

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            return _error(
                415,
                ("header", "content-type"),
                f"expected application/json, got {media_type or 'no content type'!r}",
                "unsupported_media_type",
            )
        if not admission.enter():
            response = _error(503, ("server",), f"{max_in_flight} requests in flight; retry shortly", "overloaded")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        try:
            try:
                async with asyncio.timeout(body_timeout):
                    body = await _read_limited(request, max_body_bytes)
            except TimeoutError:
                response = _error(408, ("body",), f"request body not received within {body_timeout:g} s", "timeout")
                response.headers["Connection"] = "close"
                return response
            if body is None:
                return _error(413, ("body",), f"request body exceeds {max_body_bytes} bytes", "value_error.too_large")
            return await asyncio.get_running_loop().run_in_executor(pool, answer, body)
        finally:
            admission.leave()

    return app


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit`: refuses early on Content-Length, else while streaming."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, loc: tuple[str, ...], msg: str, kind: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": list(loc), "msg": msg, "type": kind}]}, status_code=status)


def _self_check(model: LoadedModel) -> dict[str, Any]:
    """One prediction on a synthetic row: proves the unpickled pipeline runs in this environment."""
    try:
        model.predict([neutral_record(model.metadata.features)])
    except Exception as exc:  # any failure means "not ready", and the reason must be visible
        log.exception("self-check prediction failed")
        return {"ready": False, "reason": f"self-check prediction failed: {exc!r}"}
    return {"ready": True, "reason": "model loaded and self-check prediction succeeded"}
