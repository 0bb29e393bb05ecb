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
    """`python -m sluice.stages.serving` in its own process: the clients' threads must not share its GIL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.stages.serving", str(model_dir), "--port", str(port), "--max-in-flight", "2"], stderr=subprocess.PIPE
    )
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
    # The manifests' probes time out at 2 s; with prediction on the event loop they took longer.
    # The margin is for a machine shared with other work (CI runners are).
    assert max(probes) < 1.5, sorted(probes)[-5:]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    assert all(ra == "1" for s, ra in zip(statuses, retry_after, strict=True) if s == 503)


# -- 9. connection bounds ------------------------------------------------------------------


def test_server_config_bounds_connections(model_dir: Path) -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from sluice.stages.serving import HEADER_TIMEOUT_SECONDS, KEEP_ALIVE_SECONDS, MAX_INCOMPLETE_EVENT_BYTES, server_config
    from sluice.stages.serving.app import create_app

    config = server_config(create_app(model_dir), "127.0.0.1", 0)
    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS == 5
    assert config.h11_max_incomplete_event_size == MAX_INCOMPLETE_EVENT_BYTES
    assert issubclass(config.http, H11Protocol)  # the header bound is h11's; httptools would ignore it
    assert config.http.header_timeout == HEADER_TIMEOUT_SECONDS


@pytest.fixture()
def strict_server(model_dir: Path) -> Iterator[int]:
    """Keep-alive, header and body deadlines of one second, on the real protocol class."""
    import uvicorn

    from sluice.stages.serving import server_config
    from sluice.stages.serving.app import create_app

    port = free_port()
    server = uvicorn.Server(server_config(create_app(model_dir, body_timeout=1), "127.0.0.1", port, keep_alive=1, header_timeout=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the socket past `seconds`."""
    start, answer = time.monotonic(), b""
    while chunk := sock.recv(4096):
        answer += chunk
    assert time.monotonic() - start < seconds
    return answer


def test_idle_connections_are_closed(strict_server: int) -> None:
    with socket.create_connection(("127.0.0.1", strict_server), timeout=5) as silent:
        assert _closed_within(silent, 3) == b""  # never sent a byte
    with socket.create_connection(("127.0.0.1", strict_server), timeout=5) as idle:
        idle.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _closed_within(idle, 3).endswith(b'{"status":"ok"}')  # kept alive, then closed


def test_slow_and_oversized_headers_are_refused(strict_server: int) -> None:
    with socket.create_connection(("127.0.0.1", strict_server), timeout=5) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # and the rest never comes
        assert _closed_within(slow, 3) == b""
    with socket.create_connection(("127.0.0.1", strict_server), timeout=5) as big:
        big.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        try:
            for _ in range(5):
                time.sleep(0.1)
                big.sendall(b"x-junk: " + b"a" * 8_000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished: what we want, the answer says why
        assert big.recv(4096).startswith(b"HTTP/1.1 400")


def test_slow_bodies_get_408(strict_server: int) -> None:
    with socket.create_connection(("127.0.0.1", strict_server), timeout=5) as slow:
        slow.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[{")
        answer = _closed_within(slow, 3)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 1 s" in answer


# -- 10. hostile values: 4xx naming the field, 5xx counted, 415 ------------------------------


def _field_error(response: httpx.Response, loc: list, fragment: str) -> None:
    assert response.status_code == 422, response.text[:500]
    detail = response.json()["detail"]
    assert any(d["loc"] == loc and fragment in d["msg"] for d in detail), detail


@pytest.mark.parametrize(
    ("field", "raw", "fragment"),
    [
        ("mean radius", "null", "must not be null: this model has no imputer"),
        ("mean radius", "1" + "0" * 400, "out of range"),
        ("worst area", "9" * 5000, "out of range"),
        ("mean smoothness", "1e308", "the model cannot compute"),
        ("mean smoothness", "-1e308", "the model cannot compute"),
        ("mean texture", "NaN", "must be a finite number"),
        ("mean texture", "-Infinity", "must be a finite number"),
        ("worst concavity", "[" * 5 + "]" * 5, "must be a finite number, got array"),
    ],
    ids=["null-no-imputer", "1e400-int", "5000-digit-int", "1e308", "minus-1e308", "nan", "minus-infinity", "nested-array"],
)
def test_hostile_values_get_422_naming_the_field(server: str, field: str, raw: str, fragment: str) -> None:
    good = json.dumps(ROW)
    bad = json.dumps({k: "@" if k == field else v for k, v in ROW.items()}).replace('"@"', raw)
    response = _post(server, f"[{good}, {bad}, {good}]".encode())
    _field_error(response, ["body", 1, field], fragment)


def test_deep_nesting_is_422(server: str) -> None:
    response = _post(server, b"[" * 200_000 + b"]" * 200_000)
    _field_error(response, ["body"], "nested too deeply")
    response = _post(server, b'[{"mean radius": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]")
    _field_error(response, ["body"], "nested too deeply")


def test_float32_features_are_range_checked() -> None:
    from sluice.stages.serving.model import Feature
    from sluice.stages.serving.records import RecordErrors, validate_records

    with pytest.raises(RecordErrors) as caught:
        validate_records([{"x": 1e39}], (Feature("x", "float32"),), 10)
    assert caught.value.errors == [{"loc": ["body", 0, "x"], "msg": "feature 'x' is out of range for float32", "type": "value_error.range"}]
    assert list(validate_records([{"x": 3e38}], (Feature("x", "float32"),), 10)) == [{"x": 3e38}]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_bodies_get_415(server: str, content_type: str) -> None:
    response = _post(server, json.dumps([ROW]).encode(), content_type)
    assert response.status_code == 415
    assert response.json()["detail"][0]["loc"] == ["header", "content-type"]
    assert _post(server, json.dumps([ROW]).encode(), "application/json; charset=utf-8").status_code == 200


class Exploding:
    """An estimator that fails on every input: a server fault, not the client's."""

    def predict(self, frame: object) -> list[int]:
        raise RuntimeError("boom")


def test_server_errors_are_counted(model_dir: Path, tmp_path: Path) -> None:
    import hashlib

    import joblib

    from sluice.stages.serving.app import create_app

    broken = Path(shutil.copytree(model_dir, tmp_path / "model"))
    joblib.dump(Exploding(), broken / "model.joblib")
    meta = json.loads((broken / "metadata.json").read_text())
    meta["model_hash"]["value"] = hashlib.sha256((broken / "model.joblib").read_bytes()).hexdigest()
    (broken / "metadata.json").write_text(json.dumps(meta))
    with running(create_app(broken)) as url:
        response = _post(url, json.dumps([ROW]).encode())
        assert response.status_code == 500
        assert "boom" not in response.text  # no internals leak to the client
        text = httpx.get(f"{url}/metrics").text
    assert 'sluice_http_server_errors_total{endpoint="/predict",status="500"} 1.0' in text
    assert 'sluice_http_requests_total{endpoint="/predict",method="POST",model_version="' in text
    assert 'status="500"} 1.0' in text
