"""A real OpenSSH server on 127.0.0.1 for the ssh:// remote tests: `sshd -D` as the current user, keys made here.

Only public-key auth with a client key generated in the test folder; the SFTP subsystem is sshd's
own (internal-sftp), so what the store sees is what a team's cache host serves.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sluice.engine.remote.config import RemoteConfig
from tests.support.s3servers import _stop, wait_serving
from tests.support.servers import free_port

SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next((p for p in SSHD_PATHS if os.access(p, os.X_OK)), None)


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    key: Path  # the client's private key (its public half is the only authorized key)
    folder: Path  # where remotes live on the server (the same disk: a test can tamper behind it)
    pid: int  # the listening sshd; each connection is a child of it

    def sessions(self) -> list[int]:
        """The pids serving open connections (sshd's descendants), e.g. to freeze one with SIGSTOP."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(fields[1])
        found, frontier = [], [self.pid]
        while frontier:
            kids = [p for p, pp in parents.items() if pp in frontier]
            found += kids
            frontier = kids
        return found

    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.folder}/{uuid.uuid4().hex[:12]}"

    def options(self) -> dict[str, object]:
        """The remote's `options` in sluice.remotes.yaml: this key only, no agent, no ~/.ssh keys."""
        return {"key_filename": str(self.key), "look_for_keys": False, "allow_agent": False}

    def remote(self, name: str = "team") -> RemoteConfig:
        return RemoteConfig(name, self.url(), options=self.options())


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sluice-test", "-f", str(path)], check=True)


def _wait_banner(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> str:
    def banner() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(256).decode(errors="replace").strip()  # "SSH-2.0-OpenSSH_9.2p1 ..."

    return wait_serving(banner, proc, log, f"sshd on port {port}", seconds, pause=0.1)


@contextmanager
def sshd(folder: Path) -> Iterator[SshServer]:
    """`sshd -D -f <config>` on a free port; yields once it sends its banner."""
    binary = sshd_binary()
    if binary is None:
        raise FileNotFoundError("sshd")
    folder.mkdir(parents=True, exist_ok=True)
    host, client = folder / "host_ed25519", folder / "client_ed25519"
    _keygen(host)
    _keygen(client)
    shutil.copy(client.with_suffix(".pub"), folder / "authorized_keys")
    if os.geteuid() == 0:
        # as root sshd insists on its privilege-separation folder, which Debian's service unit makes
        # at boot (RuntimeDirectory=sshd) and a container never booted
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nSubsystem sftp internal-sftp\nMaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n"
    )
    log = folder / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_banner(port, proc, log)
        (folder / "data").mkdir(exist_ok=True)
        yield SshServer(port, getpass.getuser(), client, folder / "data", proc.pid)
    finally:
        _stop(proc)
