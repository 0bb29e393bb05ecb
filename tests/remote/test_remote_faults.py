"""A remote that is down, refuses, errs or hangs: one clear message and a local run, never a hang; a killed push
never leaves an entry naming a missing object."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sluice.engine.cache import RunEntry, Store
from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.fsspec_store import FsspecStore
from sluice.engine.remote.protocol import RemoteError
from sluice.engine.remote.sync import RemoteCache, needed
from tests.conftest import Workspace
from tests.remote.conftest import S3Server, chain
from tests.support.gcsserver import GCS_ENV
from tests.support.sshserver import SshServer


@contextmanager
def _answering(status: int) -> Iterator[str]:
    """An HTTP server that answers every request with `status` (a broken or forbidding S3 endpoint)."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = f"<Error><Code>{'AccessDenied' if status == 403 else 'InternalError'}</Code><Message>no</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _reply

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@contextmanager
def _silent() -> Iterator[str]:
    """Accepts connections and never answers: only a timeout ends a request."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        for c in held:
            c.close()
        sock.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["unreachable", "403", "500", "hang"])
def test_a_failing_remote_is_one_message_and_a_local_run(ws: Workspace, kind: str) -> None:
    with _answering(int(kind)) if kind.isdigit() else _silent() if kind == "hang" else _nothing() as endpoint:
        chain(ws, 3, remote_url="s3://sluice-test/x", endpoint=endpoint or _closed_port())
        res = ws.sluice(
            "run", "--json", "--remote", "team", env={"SLUICE_REMOTE_TIMEOUT": "1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
        )
    assert res.code == 0, res.err
    assert {k: v["outcome"] for k, v in res.json()["stages"].items()} == dict.fromkeys(("s0", "s1", "s2"), "ran")
    assert res.err.count("going on without the remote 'team'") == 1, res.err
    if kind == "403":
        assert "access denied" in res.err or "403" in res.err


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _remote_on(scheme: str, port: str) -> tuple[str, str]:
    """An ssh:// or gs:// remote whose server is at 127.0.0.1:`port` (a URL and its remotes-file lines)."""
    if scheme == "ssh":
        return f"ssh://sluice@127.0.0.1:{port}/srv/cache", "options: {look_for_keys: false, allow_agent: false}"
    return "gs://sluice-test/x", f"options: {{endpoint_url: 'http://127.0.0.1:{port}'}}"


@pytest.mark.parametrize("scheme", ["ssh", "gs"])
@pytest.mark.parametrize("kind", ["unreachable", "hang"])
def test_a_dead_ssh_or_gcs_remote_is_one_message_and_a_local_run(ws: Workspace, scheme: str, kind: str) -> None:
    """sftp connects when the filesystem is made and gcsfs retries inside each call (~31 s of backoff, taken back
    for our filesystem): both bounded all the same."""
    with _silent() if kind == "hang" else _nothing() as endpoint:
        url, extra = _remote_on(scheme, (endpoint or _closed_port()).rsplit(":", 1)[1])
        chain(ws, 3, remote_url=url, extra=extra)
        # a dead remote must cost seconds (3 tries of 1 s, with backoff), not paramiko's or gcsfs's own half minute
        started = time.monotonic()
        res = ws.sluice("run", "--json", "--remote", "team", env={"SLUICE_REMOTE_TIMEOUT": "1", **GCS_ENV}, timeout=60)
        took = time.monotonic() - started
    assert res.code == 0, res.err
    assert took < 15, f"{scheme} {kind}: {took:.1f} s"
    assert {k: v["outcome"] for k, v in res.json()["stages"].items()} == dict.fromkeys(("s0", "s1", "s2"), "ran")
    assert res.err.count("going on without the remote 'team'") == 1, res.err
    assert "Traceback" not in res.err, res.err


def test_push_to_an_unreachable_remote_fails_clearly(ws: Workspace) -> None:
    chain(ws, 1, remote_url="s3://sluice-test/x", endpoint=_closed_port())
    ws.run_json()
    res = ws.sluice("push", env={"SLUICE_REMOTE_TIMEOUT": "1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert res.code == 1
    assert "Could not connect" in res.err and "Traceback" not in res.err


def test_an_ssh_server_that_stops_answering_mid_session_costs_a_timeout_not_a_hang(ssh: SshServer) -> None:
    store = FsspecStore(ssh.remote(), timeout=1)
    store.put_bytes("runs/ab/f/1.json", b"{}")  # connected, and the SFTP session works
    frozen = ssh.sessions()
    assert frozen, "no sshd session process to freeze"
    outcome: list[object] = []
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=lambda: outcome.append(_error_of(lambda: store.get_bytes("runs/ab/f/1.json", 100))))
        worker.start()
        worker.join(60)  # a bound, not a measurement: without a channel timeout paramiko waits forever
        assert not worker.is_alive(), "a read from a frozen ssh server hung"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert isinstance(outcome[0], RemoteError), outcome


def _error_of(fn: Callable[[], object]) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test asserts which one
        return exc
    return None


class _Lying(FsspecStore):
    """A server that acknowledges uploads it then loses (the file:// store, dropping every object write)."""

    def put_file(self, key: str, src: Path, sha256: bytes) -> bool:
        return True


def test_an_entry_is_pushed_only_after_its_objects_are_confirmed(ws: Workspace, tmp_path: Path) -> None:
    chain(ws, 1)
    ws.run_json()
    local = Store(ws.root / ".sluice" / "cache")
    (path,) = local.entry_paths()
    entry = RunEntry.load(path)
    remote = RemoteConfig("team", (tmp_path / "remote").as_uri())
    report = RemoteCache(remote, _Lying(remote), local).push(entry)
    assert report.entries == 0 and "not confirmed" in report.skipped[0]
    assert list(FsspecStore(remote).list("runs")) == []
    assert RemoteCache(remote, FsspecStore(remote), local).push(entry).entries == 1


def _dangling(store: FsspecStore) -> list[str]:
    """Remote entries naming an object the remote does not hold."""
    bad = []
    for item in store.list("runs"):
        entry = RunEntry.from_json(json.loads(store.get_bytes(item.key, 1 << 24) or b"{}"))
        bad += [f"{item.key} -> {n.digest}" for n in needed(entry) if store.head(f"objects/{n.digest[:2]}/{n.digest[2:]}") != n.size]
    return bad


def test_killing_push_anywhere_never_leaves_an_entry_without_its_objects(seaweed: S3Server, ws: Workspace) -> None:
    url = seaweed.url()
    chain(ws, 12, size=300_000, remote_url=url, endpoint=seaweed.endpoint)
    assert set(ws.run_json().values()) == {"ran"}
    store = FsspecStore(RemoteConfig("team", url, endpoint_url=seaweed.endpoint))
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for delay in (2.6, 2.9, 3.2, 3.5, 4.0):  # import takes most of the first seconds; kills land inside the push
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "push"], cwd=ws.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _dangling(store) == []
    done = ws.sluice("push", "--json")
    assert done.code == 0, done.err
    assert done.json()["entries"] == 12 and _dangling(store) == []
