"""`sluice serve MODEL_DIR`: the real CLI serving a real model on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.servers import free_port


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_answers_predictions(model_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "serve", str(model_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if _get(f"{base}/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.stdout else "server exited")
            time.sleep(0.1)
        meta = json.loads((model_dir / "metadata.json").read_text())
        record = {f["name"]: 1.0 for f in meta["features"]}
        req = urllib.request.Request(f"{base}/predict", data=json.dumps([record]).encode(), headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        assert len(body["predictions"]) == 1 and body["predictions"][0] in meta["classes"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_refuses_a_directory_without_a_model(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sluice", "serve", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "metadata.json is missing" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_refuses_a_tampered_model(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    with open(bad / "model.joblib", "ab") as f:
        f.write(b"tampered")
    proc = subprocess.run([sys.executable, "-m", "sluice", "serve", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to serve" in proc.stderr and "metadata.json records" in proc.stderr
    assert "Traceback" not in proc.stderr
