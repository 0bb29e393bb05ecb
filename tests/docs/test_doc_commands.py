"""Every command the README and docs/ show runs as shown.

Commands are taken from fenced code blocks (shell and untyped blocks; `$ ` prompts stripped).
Each one must appear in COMMANDS below, either with where it runs and the exit code it should
give, or with the reason it cannot run here: a command added to the docs that no test runs fails
`test_every_documented_command_is_accounted_for`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLE = REPO / "pipelines" / "breast-cancer"
_SHELL_INFO = {"", "sh", "bash", "shell", "console"}
_FIRST_WORDS = {"sluice", "cd", "python", "python3", "pip", "pre-commit", "bash", "kind"}
_ASSIGNMENT = re.compile(r"[A-Z_]+=")  # `IMAGE=$(…)`, `KUBECONFIG=… pytest`


@dataclass(frozen=True)
class Where:
    """How a documented command is run: in which folder, and the exit code it must give."""

    cwd: str  # "example": a copy of pipelines/breast-cancer after one run; "repo": a fresh copy of pipelines/ under a root
    code: int = 0
    server: bool = False  # a long-running server: it must answer /health, then it is stopped
    after: str = ""  # a documented command that must run first, in the same folder


@dataclass(frozen=True)
class NotHere:
    """A documented command this suite does not run as written, and what covers it instead."""

    why: str


COMMANDS: dict[str, Where | NotHere] = {
    # README: the two commands
    "pip install -e '.[all]' && sluice run -f pipelines/breast-cancer/pipeline.yaml": Where("repo"),
    "bash .ci/run": NotHere("it is CI itself: this test runs inside it"),
    # README: the tour, from the example's folder
    "sluice validate": Where("example"),
    "sluice run": Where("example"),
    "sluice run train --set train.cv=3": Where("example"),
    "sluice status": Where("example"),
    "sluice run --dry-run": Where("example"),
    "sluice dag": Where("example"),
    "sluice schema > sluice.schema.json": Where("example"),
    # with everything cached locally, `run --remote` contacts nothing: the bucket need not exist here
    "sluice remote add team s3://bucket/sluice": Where("example"),
    "sluice run --remote team": Where("example", after="sluice remote add team s3://bucket/sluice"),
    "sluice serve models/model --port 8000": Where("example", server=True),
    "sluice rollback deploy -f deploy.yaml": NotHere(
        "needs a cluster and a deployed release: tests/deploy/test_cli_deploy.py runs rollback against the fake API server"
    ),
    "cd pipelines/breast-cancer": Where("repo"),
    "sluice status --set 'train.C_grid=[0.01, 0.1, 1.0]'": Where("example"),
    "sluice validate broken.yaml": NotHere("test_readme_validate_example runs it and compares every line"),
    # docs/dag.md
    "sluice dag [-f pipeline.yaml] [--format FORMAT] [--status] [-o FILE] [--set k=v] [--params FILE]": NotHere(
        "a usage synopsis, not a command"
    ),
    # docs/deploy.md
    "sluice serve pipelines/breast-cancer/models/model --port 8000": NotHere(
        "the same server as the tour's `sluice serve models/model`, from the repository root"
    ),
    "sluice run -f deploy.yaml": NotHere("needs a Docker engine and a cluster: tests/deploy/test_docker_build.py and test_cli_deploy.py"),
    "kind create cluster": NotHere("the real-cluster recipe: no cluster runs here (tests/deploy/test_real_cluster.py)"),
    "cd pipelines/breast-cancer && sluice run && sluice run -f deploy.yaml image && cd -": NotHere("the real-cluster recipe: needs Docker"),
    'IMAGE=$(python -c \'import json; print(json.load(open("pipelines/breast-cancer/deploy/image.json"))["reference"])\')': NotHere(
        "the real-cluster recipe"
    ),
    'kind load docker-image "$IMAGE"': NotHere("the real-cluster recipe"),
    'KUBECONFIG=~/.kube/config SLUICE_TEST_IMAGE="$IMAGE" \\': NotHere("the real-cluster recipe"),
    "SLUICE_TEST_MODEL=pipelines/breast-cancer/models/model pytest -m cluster tests/deploy -v": NotHere(
        "the real-cluster recipe (its second line)"
    ),
    # docs/editor-and-precommit.md
    "pre-commit try-repo /path/to/sluice sluice-validate --all-files": NotHere(
        "a placeholder path: tests/precommit/test_precommit_hook.py runs try-repo on this checkout"
    ),
    "python benchmarks/startup.py": NotHere("a benchmark: it prints figures, it is not a test"),
    "sluice schema -o .sluice/schema.json": Where("example"),
    # docs/ci.md
    "sluice export github-actions -f pipelines/breast-cancer/pipeline.yaml --install 'python -m pip install \".[ml,serve]\"'": Where(
        "repo"
    ),
    "sluice export --check": Where("repo"),
    # docs/remote.md: needs an S3 server
    "sluice remote add team s3://bucket/sluice --endpoint-url http://127.0.0.1:8333": NotHere(
        "tests/remote/ runs it against real SeaweedFS and rclone S3 servers"
    ),
    "sluice push [STAGES…] [--run-cache]": NotHere(
        "a synopsis; tests/remote/ runs it against real SeaweedFS and rclone S3 servers (test_remote_run.py)"
    ),
    "sluice pull [STAGES…] [--run-cache]": NotHere(
        "a synopsis; tests/remote/ runs it against real SeaweedFS and rclone S3 servers (test_remote_run.py)"
    ),
    "sluice cache verify --remote team": NotHere(
        "tests/remote/ runs it against real SeaweedFS and rclone S3 servers (test_remote_upkeep.py)"
    ),
    "sluice gc --remote team --keep-days 7 [--rev REV]… [--all-branches] [--all-tags] [--all-commits] [--dry-run]": NotHere(
        "a synopsis; tests/remote/test_remote_upkeep.py runs gc --remote, with --rev and --all-branches, against a real SeaweedFS server"
    ),
    "sluice remote list | sluice remote remove NAME": NotHere("two synopses; tests/remote/test_remote_config.py runs both"),
}


def documented_commands() -> list[tuple[str, int, str]]:
    """(file, line, command) for every shell line in a fenced block of the README and docs/."""
    found = []
    for doc in DOCS:
        info: str | None = None
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            fence = re.match(r"\s*```(\S*)", line)
            if fence:
                info = fence.group(1) if info is None else None
                continue
            if info is None or info not in _SHELL_INFO:
                continue
            text = line.strip()
            if text.startswith("$ "):
                text = text[2:]
            text = re.sub(r"\s+#\s.*$", "", text).strip()  # a trailing `# comment`
            first = text.split(" ", 1)[0]
            if first in _FIRST_WORDS or _ASSIGNMENT.match(first):
                found.append((str(doc.relative_to(REPO)), n, text))
    return found


def test_every_documented_command_is_accounted_for() -> None:
    missing = [f"{f}:{n}: {cmd}" for f, n, cmd in documented_commands() if cmd not in COMMANDS]
    assert not missing, "documented commands no test runs (add them to COMMANDS):\n" + "\n".join(missing)


def test_no_stale_entries() -> None:
    shown = {cmd for _, _, cmd in documented_commands()}
    assert not [c for c in COMMANDS if c not in shown], "COMMANDS lists commands the docs no longer show"


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `sluice` on PATH that is this checkout's, whatever the machine has installed."""
    bin_dir = tmp_path_factory.mktemp("bin")
    exe = bin_dir / "sluice"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m sluice "$@"\n')
    exe.chmod(0o755)
    pip = bin_dir / "pip"  # the README's install step: already done by CI, so a no-op here
    pip.write_text("#!/bin/sh\nexit 0\n")
    pip.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory, shim: Path) -> Path:
    """The example after its first run, as a user has it when following the tour."""
    root = tmp_path_factory.mktemp("example") / "breast-cancer"
    _copy_example(root)
    first = _bash("sluice run", root, shim)
    assert first.returncode == 0, first.stdout + first.stderr
    return root


def test_readme_validate_example(tmp_path: Path, shim: Path) -> None:
    """The README's broken spec gives exactly the problems the README prints after it."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("A mistake in the spec gets") :]
    spec = re.search(r"```yaml\n(.*?)```", section, re.S)
    shown = re.search(r"```\n\$ (sluice validate broken\.yaml)\n(.*?)```", section, re.S)
    assert spec and shown, "the README's validate example is missing"
    (tmp_path / "broken.yaml").write_text(spec.group(1))
    res = _bash(shown.group(1), tmp_path, shim)
    assert res.returncode == 2
    assert (res.stdout + res.stderr).splitlines() == shown.group(2).splitlines()


def _copy_example(dest: Path) -> None:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".sluice", "data", "models", "reports", "deploy", "sluice.lock"))


def _bash(command: str, cwd: Path, shim: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _runnable() -> Iterator[tuple[str, Where]]:
    for cmd, where in COMMANDS.items():
        if isinstance(where, Where):
            yield cmd, where


@pytest.mark.parametrize(("command", "where"), list(_runnable()), ids=[c for c, _ in _runnable()])
def test_documented_command_runs(command: str, where: Where, example_run: Path, shim: Path, tmp_path: Path) -> None:
    if where.cwd == "repo":
        _copy_example(tmp_path / "pipelines" / "breast-cancer")
        cwd = tmp_path
    else:
        cwd = tmp_path / "breast-cancer"
        shutil.copytree(example_run, cwd, symlinks=True)
    if where.server:
        _check_server(command, cwd, shim)
        return
    if where.after:
        first = _bash(where.after, cwd, shim)
        assert first.returncode == 0, f"{where.after}\n{first.stdout}\n{first.stderr}"
    res = _bash(command, cwd, shim)
    assert res.returncode == where.code, f"{command}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stdout + res.stderr


def _check_server(command: str, cwd: Path, shim: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = command.replace("--port 8000", f"--port {port}")
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"{command} did not serve /health:\n{out}") from None
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
