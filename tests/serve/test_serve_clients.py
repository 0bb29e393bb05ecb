"""Issue 9, items 7, 8, 9 (first half) and 10: the server survives what its clients send."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import running

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


