"""The `sluice-validate` hook, run by the real pre-commit tool against this checkout.

pre-commit builds the hook's virtualenv from this repository (`pip install .`), so these tests
exercise exactly what another repository gets when it adds Sluice to its config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
name: good
stages:
  prepare:
    cmd: cp data/raw.csv ${outputs.clean}
    inputs: {raw: data/raw.csv}
    outputs: {clean: data/clean.csv}
  copy:
    uses: util.copy
    inputs: {src: "${stages.prepare.outputs.clean}"}
    outputs: {src: data/copy.csv}
"""

# Two problems the hook must report with their positions: a typo'd key (line 6, col 5) and a
# wrong type inside a plugin's `with:` block (line 9).
BAD = """\
version: 1
name: bad
stages:
  prepare:
    cmd: echo hi
    ouputs: {clean: data/clean.csv}
  copy:
    uses: util.copy
    with: {pairs: 3}
"""

pytestmark = pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit is not installed (pip install pre-commit)")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One hook environment for the module: building it (pip install of this checkout) is the slow part.
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "consumer"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    (root / "good" / "pipeline.yaml").write_text(GOOD)
    (root / "bad" / "pipeline.yaml").write_text(BAD)
    (root / "notes.yaml").write_text("version: not a pipeline\n")  # outside the files pattern
    _git(root, "init", "-q")
    _git(root, "add", ".")
    return root


def _try_repo(repo: Path, home: Path, *files: str, hook: str = "sluice-validate") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "NO_COLOR": "1"}
    args = ["pre-commit", "try-repo", str(CHECKOUT), hook, "--color", "never"]
    args += ["--files", *files] if files else ["--all-files"]
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_good_pipeline_passes(repo: Path, pre_commit_home: Path) -> None:
    out = _try_repo(repo, pre_commit_home, "good/pipeline.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sluice validate" in out.stdout and "Passed" in out.stdout


def test_bad_pipeline_fails_with_locations(repo: Path, pre_commit_home: Path) -> None:
    out = _try_repo(repo, pre_commit_home, "bad/pipeline.yaml")
    assert out.returncode != 0
    assert "Failed" in out.stdout
    assert "bad/pipeline.yaml:6:5: stages.prepare.ouputs: unknown key 'ouputs' (did you mean 'outputs'?)" in out.stdout
    assert "bad/pipeline.yaml:9:" in out.stdout and "stages.copy.with.pairs" in out.stdout


def test_all_files_checks_only_matching_names(repo: Path, pre_commit_home: Path) -> None:
    out = _try_repo(repo, pre_commit_home)
    assert out.returncode != 0
    assert "bad/pipeline.yaml:6:5:" in out.stdout
    assert "good/pipeline.yaml" not in out.stdout  # valid files print nothing per file
    assert "notes.yaml" not in out.stdout


def test_export_check_fails_while_the_workflow_is_stale(repo: Path, pre_commit_home: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "sluice", "export", "github-actions", "-f", "good/pipeline.yaml"],
        check=False,
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    _git(repo, "add", ".")
    out = _try_repo(repo, pre_commit_home, hook="sluice-export-check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sluice export --check" in out.stdout and "Passed" in out.stdout
    (repo / "good" / "pipeline.yaml").write_text(GOOD.replace("data/copy.csv", "data/copied.csv").replace("cp ", "cp -p "))
    (repo / "requirements.txt").write_text("pandas\n")  # the install step now reads requirements.txt
    _git(repo, "add", ".")
    out = _try_repo(repo, pre_commit_home, hook="sluice-export-check")
    assert out.returncode != 0
    assert ".github/workflows/sluice.yml: is stale; regenerate it with: sluice export github-actions -f good/pipeline.yaml" in out.stdout
