"""Resolved spec → a DAG of stages; errors for cycles, missing stages, clashing or escaping paths.

The structural checks run on plain dicts with the standard library's graphlib, so `sluice
validate` never pays for importing networkx; `Pipeline.graph` builds the networkx DiGraph
for the phases that need graph algorithms and rendering.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING

from sluice.engine.errors import KeyPath, Location, Problem, SpecError
from sluice.engine.model import Edge, Spec, StageSpec

if TYPE_CHECKING:
    import networkx as nx

RESERVED = (".sluice", ".git")


@dataclass(frozen=True)
class Pipeline:
    """The compiled pipeline: stages in a topological order and the edges between them."""

    spec: Spec
    stages: Mapping[str, StageSpec]  # by id, in topological order
    edges: tuple[Edge, ...]
    upstream: Mapping[str, tuple[str, ...]]

    @cached_property
    def downstream(self) -> Mapping[str, tuple[str, ...]]:
        down: dict[str, list[str]] = {sid: [] for sid in self.stages}
        for sid, ups in self.upstream.items():
            for up in ups:
                down[up].append(sid)
        return {k: tuple(v) for k, v in down.items()}

    @cached_property
    def graph(self) -> nx.DiGraph[str]:
        import networkx as nx

        g: nx.DiGraph[str] = nx.DiGraph(name=self.spec.name)
        for sid, stage in self.stages.items():
            g.add_node(sid, stage=stage)
        for e in self.edges:
            if g.has_edge(e.upstream, e.downstream):
                arts = g.edges[e.upstream, e.downstream]["artifacts"]
                if e.artifact and e.artifact not in arts:
                    arts.append(e.artifact)
            else:
                g.add_edge(e.upstream, e.downstream, artifacts=[e.artifact] if e.artifact else [])
        return g

    def closure_up(self, targets: Iterable[str]) -> set[str]:
        """The targets and everything they depend on (iterative: 10,000-stage chains are fine)."""
        seen: set[str] = set()
        todo = list(targets)
        while todo:
            sid = todo.pop()
            if sid not in seen:
                seen.add(sid)
                todo.extend(self.upstream[sid])
        return seen


def normalize(path: str) -> str | None:
    """Workspace-relative POSIX path, or None if it leaves the workspace."""
    if path.startswith(("/", "~")) or (len(path) > 1 and path[1] == ":"):
        return None
    norm = posixpath.normpath(path)
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm


def fold(path: str) -> str:
    """The key under which macOS and Windows see two names as one file: NFC, case-folded."""
    return unicodedata.normalize("NFC", path).casefold()


def _ancestors(path: str) -> Iterable[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def compile_spec(spec: Spec, locate: Callable[[KeyPath], Location]) -> Pipeline:
    problems: list[Problem] = []

    def problem(path: KeyPath, message: str) -> None:
        problems.append(Problem(locate(path), message, path))

    stages: dict[str, StageSpec] = {}
    producer: dict[str, tuple[str, str]] = {}  # output path → (stage id, output name)
    under: dict[str, list[str]] = {}  # directory → stages with an output below it
    # The same two tables keyed as macOS and Windows compare names, for clashes only.
    folded: dict[str, str] = {}  # folded output path → output path
    folded_under: dict[str, str] = {}  # folded directory → the first output path below it
    for st in spec.stages:
        outs: dict[str, str] = {}
        for name, raw in st.outputs.items():
            at = ("stages", st.base, "outputs", name)
            norm = normalize(raw)
            if norm is None:
                problem(at, f"output '{raw}' is outside the workspace")
                continue
            if norm.split("/", 1)[0] in RESERVED:
                problem(at, f"output '{raw}' is inside {norm.split('/', 1)[0]}/, which Sluice reserves")
                continue
            key = fold(norm)
            if key in folded:
                other = folded[key]
                if other == norm:
                    problem(at, f"output '{norm}' is also written by stage '{producer[other][0]}'")
                else:
                    problem(
                        at,
                        f"output '{norm}' is the same file as output '{other}' of stage '{producer[other][0]}' "
                        "on case-insensitive or normalising filesystems (macOS, Windows)",
                    )
                continue
            overlap = next((folded[a] for a in _ancestors(key) if a in folded), None) or folded_under.get(key)
            if overlap is not None:
                problem(at, f"output '{norm}' overlaps output '{overlap}' of stage '{producer[overlap][0]}'")
                continue
            producer[norm] = (st.id, name)
            folded[key] = norm
            for a in _ancestors(norm):
                under.setdefault(a, []).append(st.id)
            for a in _ancestors(key):
                folded_under.setdefault(a, norm)
            outs[name] = norm
        ins: dict[str, str] = {}
        for name, raw in st.inputs.items():
            norm = normalize(raw)
            if norm is None:
                problem(("stages", st.base, "inputs", name), f"input '{raw}' is outside the workspace")
                continue
            ins[name] = norm
        stages[st.id] = _replace_paths(st, ins, outs)

    edges: list[Edge] = []
    for sid, st in stages.items():
        for name, path in st.inputs.items():
            at = ("stages", st.base, "inputs", name)
            up = producer[path][0] if path in producer else next((producer[a][0] for a in _ancestors(path) if a in producer), "")
            if up:
                if up == sid:
                    problem(at, f"input '{path}' is this stage's own output")
                    continue
                edges.append(Edge(up, sid, path))
            for below in under.get(path, ()):  # an input directory holding other stages' outputs
                if below == sid:
                    problem(at, f"input directory '{path}' contains this stage's own output")
                else:
                    edges.append(Edge(below, sid, path))
        for need in st.needs:
            if need == sid:
                problem(("stages", st.base, "needs"), f"stage '{sid}' needs itself")
            else:
                edges.append(Edge(need, sid))

    upstream: dict[str, dict[str, None]] = {sid: {} for sid in stages}  # an ordered set per stage
    for e in edges:
        upstream[e.downstream][e.upstream] = None
    if problems:
        raise SpecError(problems)
    sorter = TopologicalSorter(dict(upstream))
    try:
        order = list(sorter.static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        first = stages[cycle[0]]
        raise SpecError([Problem(first.location, "dependency cycle: " + " → ".join(cycle), ("stages", first.base))]) from None
    return Pipeline(
        spec=spec,
        stages={sid: stages[sid] for sid in order},
        edges=tuple(dict.fromkeys(edges)),
        upstream={sid: tuple(upstream[sid]) for sid in order},
    )


def _replace_paths(st: StageSpec, inputs: dict[str, str], outputs: dict[str, str]) -> StageSpec:
    from dataclasses import replace

    return replace(st, inputs=inputs, outputs=outputs)
