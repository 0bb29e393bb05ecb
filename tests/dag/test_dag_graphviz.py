"""DOT source always; SVG and PNG through Graphviz's `dot`, with a clear error when it is missing."""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import Workspace

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed (.ci/setup-dag.sh installs it)")
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def test_dot_source_has_clusters_labels_and_escaping(odd_ws: Workspace) -> None:
    res = odd_ws.sluice("dag", "--format", "dot")
    assert res.code == 0, res.err
    dot = res.out
    assert dot.startswith('digraph "odd \\"names\\" <&>" {')
    assert dot.count(" -> ") == 6
    assert dot.count('  subgraph "cluster_') == 1 and 'label="subgraph (matrix: v)"' in dot
    assert '"subgraph[v=say \\"hi\\"]" [label="subgraph[v=say \\"hi\\"]\\necho done"' in dot
    assert '"end" -> "o" [label="end.txt", tooltip="out/end.txt"];' in dot


@needs_dot
def test_svg_has_every_stage_and_state_tooltips(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--format", "svg", "--status", "--set", "model.C=0.5", "-o", "graph.svg")
    assert res.code == 0, res.err
    root = ET.parse(states_ws.root / "graph.svg").getroot()
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"prepare", "train", "broken", "after_broken", "evaluate[fold=0]", "evaluate[fold=2]"} <= texts
    assert "evaluate (matrix: fold)" in texts
    tips = [a.get(f"{XLINK}title") or "" for a in root.iter(f"{SVG}a")]
    assert any(t.startswith("train: ") and "stale: param model.C changed 1.0 → 0.5" in t for t in tips), tips
    assert any("failed: failed in the last run: command exited with code 3" in t for t in tips)
    fills = {p.get("fill") for p in root.iter(f"{SVG}path")} | {p.get("fill") for p in root.iter(f"{SVG}polygon")}
    assert {"#e8f5e9", "#fff4d6", "#ffebee", "#f4f4f4"} <= fills  # one colour per state


@needs_dot
def test_png(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--format", "png", "-o", "graph.png")
    assert res.code == 0, res.err
    data = (states_ws.root / "graph.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_svg_without_graphviz_names_the_package(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a:\n    cmd: echo a\n")
    empty = tmp_path_factory.mktemp("no-dot-here")
    assert Path(sys.executable).is_absolute()
    for fmt in ("svg", "png"):
        res = ws.sluice("dag", "--format", fmt, "-o", f"g.{fmt}", env={"PATH": str(empty)})
        assert res.code == 1
        assert "apt-get install graphviz" in res.err and f"--format {fmt}" in res.err
        assert "Traceback" not in res.err
        assert not (ws.root / f"g.{fmt}").exists()
    # the formats that need nothing still work without it
    assert ws.sluice("dag", "--format", "html", "-o", "g.html", env={"PATH": str(empty)}).code == 0
