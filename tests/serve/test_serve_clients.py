"""Issue 9, items 7, 8, 9 (first half) and 10: the server survives what its clients send."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, running

ROW = {"mean radius": 14.1, "mean texture": 19.3, "mean smoothness": 0.096, "worst area": 880.6, "worst concavity": 0.27}


def _post(url: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(f"{url}/predict", content=body, headers={"content-type": content_type}, timeout=30)


# -- 7. a bounded error report ---------------------------------------------------------------


def test_a_body_of_empty_records_gets_a_small_422(server: str) -> None:
    body = b"[" + b",".join([b"{}"] * 10_000) + b"]"
    assert len(body) < 40_000
    response = _post(server, body)
    assert response.status_code == 422
    assert len(response.content) < 8_000, len(response.content)
    detail = response.json()["detail"]
    assert detail[0] == {"loc": ["body", 0, "mean radius"], "msg": "missing feature 'mean radius'", "type": "missing"}
    assert detail[-1]["type"] == "value_error.truncated"
    assert "and 49980 more problems" in detail[-1]["msg"]
    assert response.json()["problems"] == 50_000


# -- 8. prediction off the event loop, a concurrency limit ----------------------------------


@pytest.fixture(scope="module")
def loaded_server(model_dir: Path) -> Iterator[str]:
    """`python -m stages.serving` in its own process: the clients' threads must not share its GIL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stages.serving", str(model_dir), "--port", str(port), "--max-in-flight", "2"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_health_answers_quickly_while_predict_is_saturated(loaded_server: str) -> None:
    big = json.dumps([ROW] * 8_000).encode()
    statuses: list[int] = []
    retry_after: list[str | None] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.post(f"{loaded_server}/predict", content=big, headers={"content-type": "application/json"})
                statuses.append(r.status_code)
                retry_after.append(r.headers.get("retry-after"))

    workers = [threading.Thread(target=hammer) for _ in range(6)]
    for w in workers:
        w.start()
    probes: list[float] = []
    try:
        time.sleep(0.5)
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                for path in ("/health", "/ready"):
                    start = time.perf_counter()
                    assert client.get(f"{loaded_server}{path}").status_code == 200
                    probes.append(time.perf_counter() - start)
                time.sleep(0.05)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert max(probes) < 0.5, sorted(probes)[-5:]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    assert all(ra == "1" for s, ra in zip(statuses, retry_after, strict=True) if s == 503)


# -- 9. connection bounds ------------------------------------------------------------------


def test_server_config_bounds_connections(model_dir: Path) -> None:
    from stages.serving import KEEP_ALIVE_SECONDS, MAX_INCOMPLETE_EVENT_BYTES, server_config
    from stages.serving.app import create_app

    config = server_config(create_app(model_dir), "127.0.0.1", 0)
    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS == 5
    assert config.h11_max_incomplete_event_size == MAX_INCOMPLETE_EVENT_BYTES
    assert config.http == "h11"  # the header bound is h11's; httptools would ignore it


def test_idle_and_oversized_header_connections_are_closed(model_dir: Path) -> None:
    import uvicorn

    from stages.serving import server_config
    from stages.serving.app import create_app

    port = free_port()
    server = uvicorn.Server(server_config(create_app(model_dir), "127.0.0.1", port, keep_alive=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            idle.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += idle.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            start = time.monotonic()
            assert idle.recv(4096) == b""  # closed by the server, not by our timeout
            assert time.monotonic() - start < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            # Headers trickling in: the server must not buffer them without bound.
            slow.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            try:
                for _ in range(5):
                    time.sleep(0.1)
                    slow.sendall(b"x-junk: " + b"a" * 8_000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before we finished: what we want, the answer says why
            answer = slow.recv(4096)
            assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


