"""A `cmd` stage runs the `python` its PATH finds, not sluice's own interpreter: a failed import says so."""

from __future__ import annotations

import os
import shutil
import sys
import venv
from pathlib import Path

from tests.conftest import Workspace


def test_missing_module_names_the_path_python_and_sluices_own(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          train:
            cmd: python -c "import no_such_module_xyz"
        """,
    )
    res = ws.sluice("run")
    assert res.code == 1, res.err
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in res.out  # the log tail, as before
    python = shutil.which("python")
    assert f"hint: the command could not import 'no_such_module_xyz'. `python` on this stage's PATH is {python};" in res.out
    assert f"sluice itself runs on {sys.executable}." in res.out
    assert "Install the missing package into the environment that runs the command" in res.out
    assert 'docs/spec.md, "Which python a cmd runs"' in res.out


def test_the_hint_follows_the_stage_env_path(ws: Workspace, tmp_path: Path) -> None:
    """A stage whose `env` puts another environment first: the hint names that one's python."""
    other = tmp_path / "other-env"
    venv.create(other, with_pip=False, symlinks=True)
    ws.write(
        "pipeline.yaml",
        f"""\
        version: 1
        stages:
          train:
            cmd: python -c "import no_such_module_xyz"
            env: {{PATH: "{other / "bin"}{os.pathsep}{os.environ["PATH"]}"}}
        """,
    )
    res = ws.sluice("run")
    assert res.code == 1, res.err
    assert f"`python` on this stage's PATH is {other / 'bin' / 'python'}; sluice itself runs on {sys.executable}." in res.out
    assert "A cmd stage runs the interpreter its PATH finds" in res.out


def test_other_failures_get_no_hint(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          train:
            cmd: python -c "raise SystemExit('ImportError in my own words')"
        """,
    )
    res = ws.sluice("run")
    assert res.code == 1, res.err
    assert "ImportError in my own words" in res.out
    assert "hint:" not in res.out
