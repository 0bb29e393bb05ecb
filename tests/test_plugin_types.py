"""A plugin author's type checker sees Sluice's types: the built wheel ships sluice/py.typed (PEP 561).

The wheel is built from a copy of this checkout and installed into a folder of its own, and mypy
runs outside the repository with only that folder on its path, as in a plugin's own project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkout import copy_checkout

pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[dev]')")

GOOD_PLUGIN = """\
from sluice.engine.plugin import Plugin, StageContext


class Shout(Plugin):
    name = "demo.shout"
    version = "1"

    def run(self, ctx: StageContext) -> None:
        times = int(ctx.config.get("times", 1))
        ctx.outputs["out"].write_text(ctx.inputs["text"].read_text().upper() * times)
"""

BAD_PLUGIN = """\
from sluice.engine.plugin import Plugin, StageContext


class Shout(Plugin):
    name = "demo.shout"
    version = "1"

    def run(self, ctx: StageContext) -> None:
        ctx.config["times"] = 3
        ctx.output_dir.mkdir()
        where: str = ctx.workspace
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding sluice as `pip install` of the built wheel puts it (no dependencies)."""
    root = tmp_path_factory.mktemp("typed")
    source = copy_checkout(root / "src")
    dist, target = root / "dist", root / "site"
    for argv in (["wheel", "-q", "--no-deps", "-w", str(dist), str(source)], ["install", "-q", "--no-deps", "--target", str(target)]):
        if argv[0] == "install":
            argv += [str(w) for w in dist.glob("*.whl")]
        proc = subprocess.run([sys.executable, "-m", "pip", *argv], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _mypy(site: Path, tmp_path: Path, plugin: str) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "plugin-project"
    project.mkdir()
    (project / "shout.py").write_text(plugin)
    env = {**os.environ, "PYTHONPATH": str(site)}  # sluice only from the installed wheel, not this checkout
    args = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", "", "shout.py"]
    return subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_a_correct_plugin_type_checks_clean(site: Path, tmp_path: Path) -> None:
    out = _mypy(site, tmp_path, GOOD_PLUGIN)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "py.typed" not in out.stdout


def test_misusing_the_stage_context_is_reported(site: Path, tmp_path: Path) -> None:
    out = _mypy(site, tmp_path, BAD_PLUGIN)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'shout.py:9: error: Unsupported target for indexed assignment ("Mapping[str, Any]")' in out.stdout
    assert 'shout.py:10: error: "StageContext" has no attribute "output_dir"' in out.stdout
    assert 'shout.py:11: error: Incompatible types in assignment (expression has type "Path", variable has type "str")' in out.stdout
