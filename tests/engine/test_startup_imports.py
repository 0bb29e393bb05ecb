"""Start-up is guarded by what each cheap path imports, not by timing it (benchmarks/startup.py times it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Workspace

# Runs the CLI's own entry point in a fresh interpreter and reports what got imported.
PROBE = """
import json, sys
from sluice.engine.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
STAGE_LIBRARIES = {"pandas", "numpy", "sklearn", "scipy", "docker", "kubernetes"}
# Only an invalid spec needs jsonschema's words; a check seen before needs no compiler either.
VALIDATE_AVOIDS = {"jsonschema", "referencing", "fastjsonschema", "decimal", "rich", "networkx", *STAGE_LIBRARIES}
NO_OP_RUN_AVOIDS = VALIDATE_AVOIDS | {"importlib.metadata"}

SPEC = """\
version: 1
params: {split: {test_size: 0.3}}
stages:
  export:
    cmd: cp raw.csv ${outputs.table}
    inputs: {raw: raw.csv}
    outputs: {table: table.csv}
  split:
    uses: data.split
    with: {test_size: "${params.split.test_size}", random_state: 0}
    inputs: {table: "${stages.export.outputs.table}"}
    outputs: {train: train.csv, test: test.csv}
"""


def _probe(ws: Workspace, cache: Path, *argv: str) -> tuple[int, set[str], str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ws.root,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SLUICE_SCHEMA_CACHE": str(cache)},
    )
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    report = json.loads(lines[-1])
    return report["code"], set(report["modules"]), "\n".join(lines[:-1])


def test_validate_of_a_valid_spec_imports_no_jsonschema(ws: Workspace, tmp_path: Path) -> None:
    ws.write("pipeline.yaml", SPEC)
    cache = tmp_path / "checks"
    first, _, out = _probe(ws, cache, "validate")  # compiles the checks and stores them
    assert (first, out) == (0, "1 file valid.")
    code, modules, out = _probe(ws, cache, "validate")
    assert (code, out) == (0, "1 file valid.")
    assert sorted(modules & VALIDATE_AVOIDS) == []


def test_an_invalid_spec_is_still_explained_by_jsonschema(ws: Workspace, tmp_path: Path) -> None:
    ws.write("pipeline.yaml", SPEC.replace("random_state: 0", "random_state: -1"))
    cache = tmp_path / "checks"
    for _ in range(2):  # the same words with and without stored checks
        code, modules, out = _probe(ws, cache, "validate")
        assert code == 2
        assert out.splitlines()[0] == "pipeline.yaml:10:66: stages.split.with.random_state: -1 is less than the minimum of 0"
        assert "jsonschema" in modules


def test_a_no_op_run_imports_neither_rich_nor_the_schema_libraries(ws: Workspace, tmp_path: Path) -> None:
    ws.write(
        "pipeline.yaml",
        "version: 1\nstages:\n  only:\n    cmd: cp src.txt ${outputs.o}\n    inputs: {src: src.txt}\n    outputs: {o: o.txt}\n",
    )
    ws.write("src.txt", "x\n")
    cache = tmp_path / "checks"
    assert _probe(ws, cache, "run")[0] == 0  # runs the stage
    code, modules, out = _probe(ws, cache, "run")
    assert code == 0
    assert out.startswith("0 ran, 0 restored, 1 up to date in ")
    assert sorted(modules & NO_OP_RUN_AVOIDS) == []
    assert ws.read("o.txt") == "x\n"
    # With a remote: nothing was missing, so nothing is asked, and neither fsspec nor s3fs is imported.
    ws.write("sluice.remotes.yaml", "version: 1\nremotes:\n  team:\n    url: s3://bucket/cache\n")
    code, modules, out = _probe(ws, cache, "run", "--remote", "team")
    assert code == 0 and out.splitlines()[-1] == "remote team: not asked (nothing was missing locally)"
    assert sorted(modules & (NO_OP_RUN_AVOIDS | {"fsspec", "s3fs", "botocore", "aiobotocore"})) == []
