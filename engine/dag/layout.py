"""A layered (Sugiyama-style) left-to-right layout in pure Python, so HTML needs no Graphviz.

Levels come from the longest path; edges that skip levels get dummy points so they route
between columns; barycenter sweeps reduce crossings while keeping each matrix group together;
rows are then pulled toward their neighbours and pushed apart to avoid overlaps. Every step
is iterative and linear-ish in the graph size, so 1,000 stages lay out in well under a second.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass

from sluice.engine.dag.view import DagView

CHAR_W = 7.0  # average glyph width of the 12px sans font the renderers use
NODE_H = 42.0
MIN_W, MAX_W = 90.0, 300.0
COL_GAP = 90.0
ROW_GAP = 14.0
DUMMY_GAP = 8.0
GROUP_GAP = 30.0  # extra space around a matrix group, for its frame and title
MARGIN = 24.0
SWEEPS = 6

Key = tuple[str, int]  # ("n", node index) for a stage, ("d", k) for an edge's dummy point


@dataclass(frozen=True)
class Box:
    x: float  # left
    y: float  # top
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True)
class Placed:
    boxes: dict[str, Box]  # stage id → box
    routes: dict[tuple[str, str], list[tuple[float, float]]]  # edge → points, source to target
    groups: list[tuple[str, Box]]  # matrix group frames (one per group and level)
    width: float
    height: float


def node_width(label: str, summary: str) -> float:
    return max(MIN_W, min(MAX_W, CHAR_W * max(len(label), len(summary)) + 24))


def layout(view: DagView) -> Placed:
    ids = list(view.nodes)
    index = {sid: i for i, sid in enumerate(ids)}
    level = [view.nodes[s].level for s in ids]
    depth = view.depth
    rows: list[list[Key]] = [[] for _ in range(depth)]
    for i, lv in enumerate(level):
        rows[lv].append(("n", i))
    preds: dict[Key, list[Key]] = {}
    succs: dict[Key, list[Key]] = {}
    chains: dict[tuple[str, str], list[Key]] = {}
    dummy = 0

    def link(a: Key, b: Key) -> None:
        succs.setdefault(a, []).append(b)
        preds.setdefault(b, []).append(a)

    for e in view.edges:
        u, d = index[e.upstream], index[e.downstream]
        prev: Key = ("n", u)
        chain: list[Key] = []
        for lv in range(level[u] + 1, level[d]):
            k: Key = ("d", dummy)
            dummy += 1
            rows[lv].append(k)
            chain.append(k)
            link(prev, k)
            prev = k
        link(prev, ("n", d))
        chains[(e.upstream, e.downstream)] = chain

    group: dict[Key, Hashable] = {}
    for i, sid in enumerate(ids):
        g = view.nodes[sid].group
        group[("n", i)] = ("g", g) if g else ("n", i)
    _order(rows, preds, succs, group)

    widths = {("n", i): node_width(sid, view.nodes[sid].summary) for i, sid in enumerate(ids)}
    col_w = [max((widths.get(k, 0.0) for k in row), default=MIN_W) or MIN_W for row in rows]
    col_x: list[float] = []
    x = MARGIN
    for w in col_w:
        col_x.append(x)
        x += w + COL_GAP
    ys = _rows_y(rows, preds, succs, group)
    boxes: dict[str, Box] = {}
    points: dict[Key, tuple[float, float]] = {}
    for lv, row in enumerate(rows):
        for k in row:
            if k[0] == "n":
                w = widths[k]
                bx = col_x[lv] + (col_w[lv] - w) / 2
                boxes[ids[k[1]]] = Box(bx, ys[k], w, NODE_H)
            else:
                points[k] = (col_x[lv] + col_w[lv] / 2, ys[k])
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (up, down), chain in chains.items():
        a, b = boxes[up], boxes[down]
        routes[(up, down)] = [(a.x + a.w, a.cy), *(points[k] for k in chain), (b.x, b.cy)]
    groups = _group_frames(view, boxes)
    width = x - COL_GAP + MARGIN
    height = max((bx.y + bx.h for bx in boxes.values()), default=0.0) + MARGIN
    height = max([height, *(f.y + f.h + MARGIN for _, f in groups)])
    return Placed(boxes, routes, groups, max(width, 200.0), max(height, 80.0))


def _order(rows: list[list[Key]], preds: dict[Key, list[Key]], succs: dict[Key, list[Key]], group: dict[Key, Hashable]) -> None:
    """Barycenter sweeps, down then up; a matrix group moves as one block."""
    pos: dict[Key, float] = {}
    for row in rows:
        for i, k in enumerate(row):
            pos[k] = float(i)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        order = range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)
        for lv in order:
            row = rows[lv]
            near = preds if down else succs
            bary: dict[Key, float] = {}
            for k in row:
                ns = near.get(k)
                bary[k] = sum(pos[n] for n in ns) / len(ns) if ns else pos[k]
            blocks: dict[Hashable, list[Key]] = {}
            for k in row:
                blocks.setdefault(group.get(k, k), []).append(k)
            ranked = sorted(blocks.values(), key=lambda ks: sum(bary[k] for k in ks) / len(ks))
            row[:] = [k for ks in ranked for k in sorted(ks, key=lambda k: bary[k])]
            for i, k in enumerate(row):
                pos[k] = float(i)


def _rows_y(
    rows: list[list[Key]], preds: dict[Key, list[Key]], succs: dict[Key, list[Key]], group: dict[Key, Hashable]
) -> dict[Key, float]:
    """Vertical centres: stacked in order, then pulled toward neighbours without overlapping.

    Dummy points (edges passing through a column) take almost no room, so a column crossed by
    many long edges does not push the stages apart.
    """

    def half(k: Key) -> float:
        return NODE_H / 2 if k[0] == "n" else 0.0

    y: dict[Key, float] = {}
    gaps: list[list[float]] = []  # gaps[lv][i]: minimum distance between the centres of row[i-1] and row[i]
    for row in rows:
        g = [0.0]
        for a, b in itertools.pairwise(row):
            sep = DUMMY_GAP if "d" in (a[0], b[0]) else ROW_GAP
            if _grouped(a, b, group) and group.get(a) != group.get(b):
                sep += GROUP_GAP  # room for a matrix group's frame and title
            g.append(half(a) + half(b) + sep)
        gaps.append(g)
        at = 0.0
        for i, k in enumerate(row):
            at += g[i]
            y[k] = at
    for sweep in range(4):
        near = preds if sweep % 2 == 0 else succs
        far = succs if sweep % 2 == 0 else preds
        for lv, row in enumerate(rows):
            want = []
            for k in row:
                ns = near.get(k) or far.get(k)
                want.append(sum(y[n] for n in ns) / len(ns) if ns else y[k])
            _fit(row, want, gaps[lv], y)
    top = min((v - half(k) for k, v in y.items()), default=0.0)
    shift = MARGIN + GROUP_GAP - top
    return {k: v + shift - half(k) for k, v in y.items()}  # back to top edges, which Box wants


def _grouped(a: Key, b: Key, group: dict[Key, Hashable]) -> bool:
    """True when a matrix group frame sits between `a` and `b`."""
    return group.get(a, a) != a or group.get(b, b) != b


def _fit(row: list[Key], want: list[float], gaps: list[float], y: dict[Key, float]) -> None:
    """Place each item near its wanted y, keeping the order and the minimum gaps."""
    n = len(row)
    if not n:
        return
    placed = list(want)
    for i in range(1, n):
        placed[i] = max(placed[i], placed[i - 1] + gaps[i])
    # The forward pass only pushes down; shifting back by the mean push centres the row on demand.
    overshoot = sum(p - w for p, w in zip(placed, want, strict=True)) / n
    placed = [p - overshoot for p in placed]
    for k, p in zip(row, placed, strict=True):
        y[k] = p


def _group_frames(view: DagView, boxes: dict[str, Box]) -> list[tuple[str, Box]]:
    spans: dict[tuple[str, int], list[Box]] = {}
    for sid, node in view.nodes.items():
        if node.group:
            spans.setdefault((node.group, node.level), []).append(boxes[sid])
    frames = []
    pad = 10.0
    for (name, _), bs in spans.items():
        x0 = min(b.x for b in bs) - pad
        y0 = min(b.y for b in bs) - pad - 16
        x1 = max(b.x + b.w for b in bs) + pad
        y1 = max(b.y + b.h for b in bs) + pad
        frames.append((name, Box(x0, y0, x1 - x0, y1 - y0)))
    return frames
