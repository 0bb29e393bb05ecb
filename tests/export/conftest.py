"""A small repository with a pipeline in a subfolder, the shape `sluice export` is used in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Workspace

PIPELINE = """\
version: 1
name: small
stages:
  prepare:
    cmd: cp ${inputs.raw} ${outputs.clean}
    inputs: {raw: data/raw.csv}
    outputs: {clean: data/clean.csv}
  check:
    uses: data.validate
    with:
      columns:
        age: {dtype: int, min: 0}
    inputs: {table: "${stages.prepare.outputs.clean}"}
    outputs: {report: reports/validation.json}
  summary:
    cmd: wc -l < ${inputs.clean} > ${outputs.lines}
    inputs: {clean: "${stages.prepare.outputs.clean}"}
    outputs: {lines: out/lines.txt}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Workspace:
    """A git repository holding `ml/pipeline.yaml`, its data and a pyproject.toml."""
    ws = Workspace(tmp_path / "repo")
    ws.write("ml/pipeline.yaml", PIPELINE)
    ws.write("ml/data/raw.csv", "name,age\nann,31\nbob,45\n")
    ws.write("pyproject.toml", '[project]\nname = "small"\nversion = "0"\n')
    ws.write(".gitignore", ".sluice/\nsluice-run.json\n")
    subprocess.run(["git", "init", "-q", str(ws.root)], check=True)
    return ws
