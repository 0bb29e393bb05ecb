"""The stage graph for people and tools: a terminal view by level, and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from engine.compile import Pipeline
from engine.model import Decision, PlanItem


def levels(pipeline: Pipeline) -> list[list[str]]:
    """Stages grouped so each depends only on earlier groups (networkx topological generations)."""
    import networkx as nx

    return [sorted(gen) for gen in nx.topological_generations(pipeline.graph)]


def render(pipeline: Pipeline, fmt: str, status: Sequence[PlanItem] | None = None) -> str:
    state = {i.stage: i for i in status or ()}
    if fmt == "json":
        return json.dumps(to_json(pipeline, state), indent=2) + "\n"
    return text_view(pipeline, state)


def to_json(pipeline: Pipeline, state: dict[str, PlanItem]) -> dict[str, object]:
    nodes = []
    for sid, st in pipeline.stages.items():
        node: dict[str, object] = {"id": sid, "stage": st.base, "kind": st.kind, "matrix": dict(st.matrix)}
        if sid in state:
            node["decision"] = state[sid].decision.value
            node["reasons"] = list(state[sid].reasons)
        nodes.append(node)
    edges = [{"from": e.upstream, "to": e.downstream, "artifact": e.artifact} for e in pipeline.edges]
    return {"name": pipeline.spec.name, "nodes": nodes, "edges": edges}


def text_view(pipeline: Pipeline, state: dict[str, PlanItem]) -> str:
    lines = [f"{pipeline.spec.name}: {len(pipeline.stages)} stages, {len(pipeline.edges)} edges"]
    for n, level in enumerate(levels(pipeline)):
        lines.append(f"level {n}")
        for sid in level:
            st = pipeline.stages[sid]
            ups = pipeline.upstream[sid]
            what = st.uses or (st.cmd or "").split("\n", 1)[0][:50]
            mark = ""
            if sid in state:
                item = state[sid]
                mark = " [up to date]" if item.decision is Decision.SKIP else f" [{item.decision.value}: {'; '.join(item.reasons)}]"
            after = f"  ← {', '.join(ups)}" if ups else ""
            lines.append(f"  {sid}  ({what}){after}{mark}")
    return "\n".join(lines) + "\n"
