"""Pipelines for the `sluice dag` tests: one with every node state, one with awkward names."""

from __future__ import annotations

import pytest

from tests.conftest import Workspace

# prepare → train → evaluate[fold=0..2]; broken fails; after_broken never gets to run.
STATES = """\
version: 1
name: states
params: {model: {C: 1.0}}
stages:
  prepare:
    cmd: cp data/raw.csv ${outputs.clean}
    inputs: {raw: data/raw.csv}
    outputs: {clean: data/clean.csv}
  train:
    cmd: echo C=${params.model.C} > ${outputs.model}; cat ${inputs.data} >> ${outputs.model}
    inputs: {data: "${stages.prepare.outputs.clean}"}
    outputs: {model: models/model.txt}
  evaluate:
    uses: util.copy
    inputs: {model: "${stages.train.outputs.model}"}
    outputs: {model: "eval/${matrix.fold}/model.txt"}
    matrix: {fold: [0, 1, 2]}
  broken:
    cmd: echo about to fail; exit 3
    inputs: {raw: data/raw.csv}
    outputs: {x: broken.txt}
  after_broken:
    cmd: cat ${inputs.x}
    inputs: {x: "${stages.broken.outputs.x}"}
    outputs: {y: after.txt}
"""

# Names that break naive Mermaid and DOT output: keywords, a lone `o` (an edge head in Mermaid),
# and matrix values with quotes, markup, `#`, `|`, backticks and brackets.
ODD = """\
version: 1
name: odd "names" <&>
stages:
  end:
    cmd: echo "a|b" > ${outputs.o}
    outputs: {o: out/end.txt}
  o:
    cmd: 'cat ${inputs.i} # "quoted" <tag> & more'
    inputs: {i: "${stages.end.outputs.o}"}
    outputs: {o: out/o.txt}
  subgraph:
    cmd: echo done
    needs: [o]
    matrix:
      v: ['say "hi"', '<b>x</b>', 'a#b|c', 'back`tick', '[x];{y}']
"""
ODD_STAGES = 7
ODD_EDGES = 6  # end → o (an artifact), o → each of 5 matrix instances (needs)


@pytest.fixture
def states_ws(ws: Workspace) -> Workspace:
    """After one run (broken failed) and with model.C changed: every state at once."""
    ws.write("data/raw.csv", "a,b\n1,2\n")
    ws.write("pipeline.yaml", STATES)
    outcomes = ws.run_json()
    assert outcomes["broken"] == "failed" and outcomes["after_broken"] == "not-run"
    assert outcomes["train"] == "ran"
    return ws


@pytest.fixture
def odd_ws(ws: Workspace) -> Workspace:
    ws.write("pipeline.yaml", ODD)
    assert ws.sluice("validate").code == 0
    return ws
