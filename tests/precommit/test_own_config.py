"""The project's own .pre-commit-config.yaml, run by the real pre-commit on a throwaway copy of this checkout.

Every hook is local (`language: system`), so nothing is fetched: these tests pass offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.checkout import CHECKOUT, copy_checkout

pytestmark = pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit is not installed (pip install pre-commit)")

CLEAN = '''"""A module ruff and mypy accept."""

from __future__ import annotations


def twice(n: int) -> int:
    return 2 * n
'''

# F401 (unused import) and E711 (comparison to None): what a reviewer should never have to point out.
LINT_ERROR = '''"""A module with lint errors."""

import os


def empty(x: object) -> bool:
    return x == None
'''

TYPE_ERROR = '''"""A module with a type error."""

from __future__ import annotations


def count(text: str) -> int:
    return text.strip()
'''


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's files as a new repository."""
    root = copy_checkout(tmp_path_factory.mktemp("own") / "sluice")
    if (CHECKOUT / ".mypy_cache").is_dir():  # a warm start (CI runs mypy first); mypy re-checks what changed
        shutil.copytree(CHECKOUT / ".mypy_cache", root / ".mypy_cache", symlinks=True)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    return root


def _pre_commit(repo: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"), "NO_COLOR": "1"}
    args = ["pre-commit", "run", "--color", "never", "--files", *files]
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)


def _check(repo: Path, rel: str, text: str) -> subprocess.CompletedProcess[str]:
    """Add one file, run the hooks on it, and take it out again so the next test sees the tree as copied."""
    (repo / rel).write_text(text)
    _git(repo, "add", rel)
    try:
        return _pre_commit(repo, rel)
    finally:
        _git(repo, "rm", "-q", "--cached", rel)
        (repo / rel).unlink()


def test_clean_file_passes(copy: Path) -> None:
    out = _check(copy, "tests/clean_sample.py", CLEAN)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ruff check" in out.stdout and "ruff format" in out.stdout and "Failed" not in out.stdout
    assert "files were modified" not in out.stdout  # the format hook had nothing to rewrite


def test_lint_error_fails_with_its_location(copy: Path) -> None:
    out = _check(copy, "tests/lint_sample.py", LINT_ERROR)
    assert out.returncode != 0
    assert "ruff check" in out.stdout and "Failed" in out.stdout
    assert "tests/lint_sample.py:3:8" in out.stdout and "F401" in out.stdout
    assert "tests/lint_sample.py:7:17" in out.stdout and "E711" in out.stdout


def test_type_error_in_the_engine_fails_mypy(copy: Path) -> None:
    out = _check(copy, "engine/_typing_sample.py", TYPE_ERROR)
    assert out.returncode != 0
    assert "mypy" in out.stdout and "Failed" in out.stdout
    assert "engine/_typing_sample.py:7: error: Incompatible return value type" in out.stdout


def test_invalid_example_pipeline_fails_sluice_validate(copy: Path) -> None:
    out = _check(copy, "pipelines/broken.yaml", "version: 1\nstages:\n  a:\n    cmd: echo\n    ouputs: {o: x}\n")
    assert out.returncode != 0
    assert "pipelines/broken.yaml:5:5: stages.a.ouputs: unknown key 'ouputs'" in out.stdout
