"""`sluice schema`: the bundled JSON Schema accepts what the engine accepts and rejects bad plugin config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SAMPLE = """\
# yaml-language-server: $schema=sluice.schema.json
version: 1
name: sample
params: {model: {C: 1.0}}
stages:
  prepare:
    cmd: cp data/raw.csv ${outputs.clean}
    inputs: {raw: data/raw.csv}
    outputs: {clean: data/clean.csv}
  copy:
    uses: util.copy
    with: {pairs: {clean: copied}}
    inputs: {clean: "${stages.prepare.outputs.clean}"}
    outputs: {copied: data/copy.csv}
  report:
    cmd: echo ${matrix.fold}
    needs: [copy]
    matrix: {fold: [0, 1]}
"""

# A third-party plugin, installed the way pip would: a module plus a dist-info with an entry point.
ACME_MODULE = """
from sluice.engine.plugin import Plugin

class ScoreStage(Plugin):
    name = "acme.score"
    version = "3"
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["metric"],
        "additionalProperties": False,
        "properties": {"metric": {"$ref": "#/$defs/metric"}},
        "$defs": {"metric": {"enum": ["auc", "f1"]}},
    }
"""


def sluice(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def problems(schema: dict[str, Any], doc: Any) -> list[tuple[str, str]]:
    v = Draft202012Validator(schema)
    return [("/".join(map(str, e.absolute_path)), e.message) for e in v.iter_errors(doc)]


def bundle(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = sluice("schema", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    Draft202012Validator.check_schema(schema)
    return schema


def test_sample_spec_is_valid_for_engine_and_schema(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(SAMPLE)
    assert sluice("validate", cwd=tmp_path).returncode == 0
    assert problems(bundle(tmp_path), yaml.safe_load(SAMPLE)) == []


def test_wrong_plugin_config_is_rejected_where_it_is(tmp_path: Path) -> None:
    schema = bundle(tmp_path)
    doc = yaml.safe_load(SAMPLE)
    doc["stages"]["copy"]["with"] = {"pairs": 3}
    assert problems(schema, doc) == [("stages/copy/with/pairs", "3 is not valid under any of the given schemas")]
    doc["stages"]["copy"]["with"] = {"pears": {}}
    [(where, message)] = problems(schema, doc)
    assert where == "stages/copy/with" and "'pears' was unexpected" in message
    # the engine agrees
    (tmp_path / "pipeline.yaml").write_text(SAMPLE.replace("with: {pairs: {clean: copied}}", "with: {pears: {}}"))
    assert sluice("validate", cwd=tmp_path).returncode == 2


def test_plugin_schemas_apply_only_to_their_own_stage(tmp_path: Path) -> None:
    schema = bundle(tmp_path)
    doc = yaml.safe_load(SAMPLE)
    # `pairs` belongs to util.copy; under another plugin's `uses:` the same block is checked against that one
    doc["stages"]["copy"]["uses"] = "model.gate"
    assert any(where.startswith("stages/copy/with") for where, _ in problems(schema, doc))
    doc["stages"]["copy"]["uses"] = "util.cpy"
    assert [w for w, _ in problems(schema, doc)] == ["stages/copy/uses"]


def test_every_installed_plugin_is_bound(tmp_path: Path) -> None:
    names = subprocess.run(
        [sys.executable, "-c", "from sluice.engine.registry import Registry; print(*Registry.discover().names())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    stage = bundle(tmp_path)["$defs"]["stage"]
    bound = [rule["if"]["properties"]["uses"]["const"] for rule in stage["allOf"]]
    assert sorted(bound) == sorted(names)
    assert sorted(stage["properties"]["uses"]["enum"]) == sorted(names)


def test_third_party_plugin_from_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "acme_sluice-0.1.dist-info").mkdir(parents=True)
    (site / "acme_sluice.py").write_text(ACME_MODULE)
    (site / "acme_sluice-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sluice\nVersion: 0.1\n")
    (site / "acme_sluice-0.1.dist-info" / "entry_points.txt").write_text("[sluice.stages]\nacme.score = acme_sluice:ScoreStage\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    schema = bundle(tmp_path, env)
    doc = {"version": 1, "stages": {"score": {"uses": "acme.score", "with": {"metric": "auc"}}}}
    assert problems(schema, doc) == []
    doc["stages"]["score"]["with"] = {"metric": "accuracy"}  # checked through the plugin's own local $ref
    assert [w for w, _ in problems(schema, doc)] == ["stages/score/with/metric"]


def test_output_file(tmp_path: Path) -> None:
    out = sluice("schema", "-o", "sluice.schema.json", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == ""
    assert json.loads((tmp_path / "sluice.schema.json").read_text())["$defs"]["with.util.copy"]["type"] == "object"


def test_bare_references_are_accepted_where_the_plugin_wants_a_value(tmp_path: Path) -> None:
    schema = bundle(tmp_path)
    doc = {
        "version": 1,
        "params": {"share": 0.2},
        "stages": {
            "split": {
                "uses": "data.split",
                "with": {"test_size": "${params.share}"},
                "inputs": {"table": "t.csv"},
                "outputs": {"train": "a.csv", "test": "b.csv"},
            }
        },
    }
    assert problems(schema, doc) == []
    doc["stages"]["split"]["with"]["test_size"] = "a fifth"  # not a reference: still wrong
    assert [w for w, _ in problems(schema, doc)] == ["stages/split/with/test_size"]
    doc["stages"]["split"]["with"] = {"test_size": 0.2, "tset_size": 0.1}  # unknown keys stay errors
    assert [w for w, _ in problems(schema, doc)] == ["stages/split/with"]
