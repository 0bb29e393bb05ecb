"""The stage graph as a view model for `sluice dag`: nodes, artifact edges, matrix groups, states.

Rendering lives in `formats` (text, JSON, DOT, Mermaid, Graphviz images) and `html`
(a self-contained page drawn with the pure-Python layout of `layout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from sluice.engine.compile import Pipeline
from sluice.engine.model import Decision, PlanItem, StageSpec
from sluice.engine.shell import render_cmd
from sluice.engine.state import Layout, LockFile, read_last_run

FORMATS = ("text", "json", "dot", "mermaid", "svg", "png", "html")
BINARY_FORMATS = ("png",)


class NodeState(Enum):
    """A stage's state for `dag --status`; the planner's decision plus the last run's outcome."""

    UP_TO_DATE = "up-to-date"  # recorded fingerprint matches and outputs are intact
    STALE = "stale"  # would run or be restored; the reasons say why
    FAILED = "failed"  # failed in the last run and has not succeeded since
    NEVER_RUN = "never-run"  # no record in the lock file


@dataclass(frozen=True)
class DagNode:
    id: str  # stage id, e.g. "report[fold=0]"
    stage: str  # the name under `stages:`
    kind: str  # the plugin name, or "cmd"
    summary: str  # the plugin name, or the first line of the command
    level: int  # longest path from a source: 0 for stages with no upstream
    matrix: Mapping[str, object] = field(default_factory=dict)
    desc: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    state: NodeState | None = None  # None without --status
    reasons: tuple[str, ...] = ()

    @property
    def group(self) -> str | None:
        """Matrix instances share a group named after their stage."""
        return self.stage if self.matrix else None


@dataclass(frozen=True)
class DagEdge:
    upstream: str
    downstream: str
    artifacts: tuple[str, ...]  # paths that flow along the edge; empty for a `needs` edge


@dataclass(frozen=True)
class DagView:
    name: str
    nodes: Mapping[str, DagNode]  # in topological order
    edges: tuple[DagEdge, ...]  # one per (upstream, downstream) pair

    @property
    def depth(self) -> int:
        return 1 + max((n.level for n in self.nodes.values()), default=-1)

    def grouped(self) -> tuple[list[DagNode], dict[str, list[DagNode]]]:
        """Stages outside any matrix, and matrix instances by stage name."""
        single: list[DagNode] = []
        groups: dict[str, list[DagNode]] = {}
        for n in self.nodes.values():
            if n.group:
                groups.setdefault(n.group, []).append(n)
            else:
                single.append(n)
        return single, groups

    def levels(self) -> list[list[DagNode]]:
        out: list[list[DagNode]] = [[] for _ in range(self.depth)]
        for node in self.nodes.values():
            out[node.level].append(node)
        return out


def summary_of(stage: StageSpec, width: int = 60) -> str:
    if stage.uses:
        return stage.uses
    # The command as it runs (output paths filled in), not the template with `${outputs.…}`.
    first = render_cmd(stage.cmd or "", stage.outputs).strip().split("\n", 1)[0]
    return first if len(first) <= width else first[: width - 1] + "…"


def _state(item: PlanItem, recorded: bool, failed_error: str | None) -> tuple[NodeState, tuple[str, ...]]:
    if item.decision is Decision.SKIP:
        return NodeState.UP_TO_DATE, item.reasons
    if failed_error is not None:
        return NodeState.FAILED, (f"failed in the last run: {failed_error}" if failed_error else "failed in the last run", *item.reasons)
    if not recorded:
        return NodeState.NEVER_RUN, item.reasons
    return NodeState.STALE, item.reasons


def build(pipeline: Pipeline, status: Sequence[PlanItem] | None = None, layout: Layout | None = None) -> DagView:
    """The view of `pipeline`; with `status` (and the workspace `layout`), each node's state."""
    items = {i.stage: i for i in status or ()}
    recorded: Mapping[str, object] = {}
    failed: dict[str, str] = {}
    if status is not None and layout is not None:
        recorded = LockFile.read(layout.lock_file, pipeline=layout.section(pipeline.spec.file), stage_ids=pipeline.stages).stages
        last = read_last_run(layout) or {}
        for sid, rec in (last.get("stages") or {}).items():
            if isinstance(rec, dict) and rec.get("outcome") == "failed":
                failed[sid] = str(rec.get("error") or "")
    levels: dict[str, int] = {}
    nodes: dict[str, DagNode] = {}
    for sid, st in pipeline.stages.items():  # topological order: upstream levels are known
        levels[sid] = 1 + max((levels[u] for u in pipeline.upstream[sid]), default=-1)
        state: NodeState | None = None
        reasons: tuple[str, ...] = ()
        if sid in items:
            state, reasons = _state(items[sid], sid in recorded, failed.get(sid))
        nodes[sid] = DagNode(
            id=sid,
            stage=st.base,
            kind=st.kind,
            summary=summary_of(st),
            level=levels[sid],
            matrix=dict(st.matrix),
            desc=st.desc,
            inputs=dict(st.inputs),
            outputs=dict(st.outputs),
            state=state,
            reasons=tuple(reasons),
        )
    pairs: dict[tuple[str, str], list[str]] = {}
    for e in pipeline.edges:
        arts = pairs.setdefault((e.upstream, e.downstream), [])
        if e.artifact and e.artifact not in arts:
            arts.append(e.artifact)
    edges = tuple(DagEdge(u, d, tuple(a)) for (u, d), a in pairs.items())
    return DagView(pipeline.spec.name, nodes, edges)
