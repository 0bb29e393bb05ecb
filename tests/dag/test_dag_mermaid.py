"""Mermaid output: the structure GitHub renders, and names that would break a naive writer."""

from __future__ import annotations

import re

from tests.conftest import Workspace
from tests.dag.conftest import ODD_EDGES, ODD_STAGES

NODE = re.compile(r'^\s+(n\d+)\["(.*)"\]$')
EDGE = re.compile(r'^\s+(n\d+) (-->\|"([^"]*)"\||-\.->) (n\d+)$')
ENTITY = re.compile(r"#(\d+|quot|amp|lt|gt);")
NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}


def unescape(text: str) -> str:
    return ENTITY.sub(lambda m: NAMED.get(m.group(1)) or chr(int(m.group(1))), text)


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]], list[str]]:
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    other: list[str] = []
    for line in text.splitlines()[1:]:
        if m := NODE.match(line):
            nodes[m.group(1)] = m.group(2)
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(4), m.group(3) or ""))
        else:
            other.append(line.strip())
    return nodes, edges, other


def test_odd_names_are_escaped_and_counted(odd_ws: Workspace) -> None:
    res = odd_ws.sluice("dag", "--format", "mermaid")
    assert res.code == 0, res.err
    assert res.out.splitlines()[0] == "flowchart LR"
    nodes, edges, other = parse(res.out)
    assert len(nodes) == ODD_STAGES and len(edges) == ODD_EDGES
    for label in nodes.values():
        name, _, rest = label.partition("<br/><small>")
        assert rest.endswith("</small>")
        # nothing the Mermaid parser or GitHub's HTML sanitiser would act on is left raw
        assert not set(name + rest[: -len("</small>")]) & set('"<>`|'), label
    names = {unescape(label.partition("<br/>")[0]) for label in nodes.values()}
    assert names == {
        "end",
        "o",
        'subgraph[v=say "hi"]',
        "subgraph[v=<b>x</b>]",
        "subgraph[v=a#b|c]",
        "subgraph[v=back`tick]",
        "subgraph[v=[x];{y}]",
    }
    ids = {name: nid for nid, label in nodes.items() for name in [unescape(label.partition("<br/>")[0])]}
    assert (ids["end"], ids["o"], "end.txt") in edges
    assert sum(1 for a, b, _ in edges if a == ids["o"]) == 5
    # one balanced matrix group holding the five instances
    assert [line for line in other if line.startswith("subgraph")] == ['subgraph g0["subgraph (matrix: v)"]']
    assert other.count("end") == 1
    assert all(line.startswith(("subgraph", "end")) or not line for line in other)


def test_status_classes(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--format", "mermaid", "--status", "--set", "model.C=0.5")
    assert res.code == 0, res.err
    nodes, _edges, other = parse(res.out)
    ids = {unescape(label.partition("<br/>")[0]): nid for nid, label in nodes.items()}
    classes = {nid: line.split()[2] for line in other if line.startswith("class ") for nid in line.split()[1].split(",")}
    assert classes[ids["prepare"]] == "up_to_date"
    assert classes[ids["broken"]] == "failed"
    assert classes[ids["after_broken"]] == "never_run"
    assert classes[ids["train"]] == classes[ids["evaluate[fold=2]"]] == "stale"
    assert len(classes) == len(nodes)
    assert sum(1 for line in other if line.startswith("classDef ")) == 4


def test_needs_edges_are_dotted(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a:\n    cmd: echo a\n  b:\n    cmd: echo b\n    needs: [a]\n")
    nodes, edges, _ = parse(ws.sluice("dag", "--format", "mermaid").out)
    assert nodes == {"n0": "a<br/><small>echo a</small>", "n1": "b<br/><small>echo b</small>"}
    assert edges == [("n0", "n1", "")]
    assert "  n0 -.-> n1" in ws.sluice("dag", "--format", "mermaid").out
