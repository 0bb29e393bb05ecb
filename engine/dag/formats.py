"""`sluice dag` as text (rich), JSON, Graphviz DOT, Mermaid, and SVG/PNG through Graphviz's `dot`."""

from __future__ import annotations

import io
import json
import posixpath
import shutil
import subprocess
from collections.abc import Iterable

from sluice.engine.dag.view import DagEdge, DagNode, DagView, NodeState
from sluice.engine.errors import SluiceError, ToolMissing

# (border, fill) per state; the same palette in every graphical format.
PALETTE: dict[NodeState | None, tuple[str, str]] = {
    None: ("#5b6b7f", "#eef2f7"),
    NodeState.UP_TO_DATE: ("#2e7d32", "#e8f5e9"),
    NodeState.STALE: ("#b26a00", "#fff4d6"),
    NodeState.FAILED: ("#c62828", "#ffebee"),
    NodeState.NEVER_RUN: ("#8a8a8a", "#f4f4f4"),
}
_MARK = {
    NodeState.UP_TO_DATE: ("✓", "green"),
    NodeState.STALE: ("●", "yellow"),
    NodeState.FAILED: ("✗", "bold red"),
    NodeState.NEVER_RUN: ("○", "dim"),
}
_LIST_MAX = 6
_INSTALL_GRAPHVIZ = (
    "Graphviz's `dot` is needed for --format {fmt}: install it with `apt-get install graphviz` "
    "(macOS: `brew install graphviz`), or use --format html, mermaid or dot, which need nothing installed"
)


def artifact_label(edge: DagEdge) -> str:
    """Short edge label: the artifacts' file names."""
    return ", ".join(posixpath.basename(a) or a for a in edge.artifacts)


def tooltip(node: DagNode) -> str:
    head = f"{node.id}: {node.summary}"
    if node.state is None:
        return head
    return f"{head}\n{node.state.value}: " + "; ".join(node.reasons)


def _names(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_LIST_MAX])
    return shown + (f", … +{len(items) - _LIST_MAX}" if len(items) > _LIST_MAX else "")


# --- text ---------------------------------------------------------------------------------


def text_view(view: DagView, *, color: bool = False, width: int = 120) -> str:
    """Levels top to bottom; each line shows fan-in (←) and fan-out (→); matrix instances folded."""
    from rich.console import Console
    from rich.markup import escape

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, no_color=not color, width=width, highlight=False, soft_wrap=True)
    ups: dict[str, list[DagEdge]] = {sid: [] for sid in view.nodes}
    downs: dict[str, list[str]] = {sid: [] for sid in view.nodes}
    for e in view.edges:
        ups[e.downstream].append(e)
        downs[e.upstream].append(e.downstream)

    def stage_of(sid: str) -> str:
        return view.nodes[sid].stage if view.nodes[sid].group else sid

    lines: list[str] = []  # printed at once: one print per line costs seconds at 10,000 stages
    lines.append(f"[bold]{escape(view.name)}[/]: {len(view.nodes)} stages, {len(view.edges)} edges, {view.depth} levels")
    for lv, nodes in enumerate(view.levels()):
        lines.append(f"[bold]level {lv}[/]")
        folded: dict[str, list[DagNode]] = {}
        for n in nodes:
            folded.setdefault(n.group or n.id, []).append(n)
        for members in folded.values():
            first = members[0]
            if first.group:
                keys = "; ".join(f"{k}: {', '.join(dict.fromkeys(str(m.matrix[k]) for m in members))}" for k in first.matrix)
                title = f"[bold]{escape(first.stage)}[/] [cyan]×{len(members)}[/] [dim]\\[{escape(keys)}][/]"
            else:
                title = f"[bold]{escape(first.id)}[/]"
            fan_in = dict.fromkeys(
                f"{stage_of(e.upstream)}" + (f" ({artifact_label(e)})" if e.artifacts else "") for m in members for e in ups[m.id]
            )
            fan_out = dict.fromkeys(stage_of(d) for m in members for d in downs[m.id])
            line = f"  {title}  [dim]{escape(first.summary)}[/]"
            if fan_in:
                line += f"  ← {escape(_names(fan_in))}"
            if fan_out:
                line += f"  → {escape(_names(fan_out))}"
            lines.append(line)
            for m in members:
                if m.state is None:
                    continue
                mark, style = _MARK[m.state]
                who = f"{m.id}: " if first.group else ""
                why = "; ".join(m.reasons) if m.state is not NodeState.UP_TO_DATE else "up to date"
                lines.append(f"      [{style}]{mark} {escape(who + why)}[/]")
    console.print("\n".join(lines))
    return buf.getvalue()


# --- JSON ---------------------------------------------------------------------------------


def json_data(view: DagView) -> dict[str, object]:
    nodes = []
    for n in view.nodes.values():
        node: dict[str, object] = {
            "id": n.id,
            "stage": n.stage,
            "kind": n.kind,
            "summary": n.summary,
            "level": n.level,
            "matrix": dict(n.matrix),
            "group": n.group,
            "desc": n.desc,
            "inputs": dict(n.inputs),
            "outputs": dict(n.outputs),
        }
        if n.state is not None:
            node["state"] = n.state.value
            node["reasons"] = list(n.reasons)
        nodes.append(node)
    # One entry per artifact, so a tool can follow a file; a `needs` edge has artifact "".
    edges = [{"from": e.upstream, "to": e.downstream, "artifact": a} for e in view.edges for a in (e.artifacts or ("",))]
    return {"name": view.name, "levels": view.depth, "nodes": nodes, "edges": edges}


def json_view(view: DagView) -> str:
    return json.dumps(json_data(view), indent=2, default=str) + "\n"


# --- DOT ----------------------------------------------------------------------------------


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot_source(view: DagView) -> str:
    out = [
        f"digraph {_q(view.name)} {{",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.7, tooltip=" "];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=1.4];',
        '  edge [fontname="Helvetica", fontsize=9, color="#8795a8", fontcolor="#56657a", arrowsize=0.7];',
    ]

    def node_line(n: DagNode, indent: str) -> str:
        border, fill = PALETTE[n.state]
        style = "rounded,filled,dashed" if n.state is NodeState.NEVER_RUN else "rounded,filled"
        label = f"{n.id}\n{n.summary}"
        attrs = f"label={_q(label)}, tooltip={_q(tooltip(n))}, color={_q(border)}, fillcolor={_q(fill)}, style={_q(style)}"
        return f"{indent}{_q(n.id)} [{attrs}];"

    single, groups = view.grouped()
    out.extend(node_line(n, "  ") for n in single)
    for i, (name, members) in enumerate(groups.items()):
        keys = ", ".join(members[0].matrix)
        out.append(f"  subgraph {_q(f'cluster_{i}')} {{")
        out.append(f'    label={_q(f"{name} (matrix: {keys})")}; style="rounded,dashed"; color="#7a8ca5"; fontcolor="#3d4b5c";')
        out.extend(node_line(n, "    ") for n in members)
        out.append("  }")
    for e in view.edges:
        attrs = f" [label={_q(artifact_label(e))}, tooltip={_q(', '.join(e.artifacts))}]" if e.artifacts else ' [style="dashed"]'
        out.append(f"  {_q(e.upstream)} -> {_q(e.downstream)}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"


def graphviz(view: DagView, fmt: str) -> bytes:
    """SVG or PNG bytes from Graphviz's `dot`; ToolMissing (with the install command) without it."""
    exe = shutil.which("dot")
    if exe is None:
        raise ToolMissing(_INSTALL_GRAPHVIZ.format(fmt=fmt))
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_source(view).encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise SluiceError(f"Graphviz `dot -T{fmt}` failed: {proc.stderr.decode(errors='replace').strip()[:500]}")
    return proc.stdout


# --- Mermaid ------------------------------------------------------------------------------

_MERMAID_ESCAPES = {"&": "#amp;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;", "`": "#96;", "|": "#124;"}


def mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label: entity codes for what the parser or HTML would eat."""
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in text).replace("\n", " ")


def mermaid(view: DagView) -> str:
    """A `flowchart LR` that GitHub renders; node ids are generated, names only appear in labels."""
    ident = {sid: f"n{i}" for i, sid in enumerate(view.nodes)}
    out = ["flowchart LR"]

    def node_line(n: DagNode, indent: str) -> str:
        return f'{indent}{ident[n.id]}["{mermaid_text(n.id)}<br/><small>{mermaid_text(n.summary)}</small>"]'

    single, groups = view.grouped()
    out.extend(node_line(n, "  ") for n in single)
    for i, (name, members) in enumerate(groups.items()):
        out.append(f'  subgraph g{i}["{mermaid_text(name)} (matrix: {mermaid_text(", ".join(members[0].matrix))})"]')
        out.extend(node_line(n, "    ") for n in members)
        out.append("  end")
    for e in view.edges:
        arrow = f'-->|"{mermaid_text(artifact_label(e))}"|' if e.artifacts else "-.->"
        out.append(f"  {ident[e.upstream]} {arrow} {ident[e.downstream]}")
    states = {n.state for n in view.nodes.values() if n.state is not None}
    for state in sorted(states, key=lambda s: s.value):
        border, fill = PALETTE[state]
        dash = ",stroke-dasharray:4 3" if state is NodeState.NEVER_RUN else ""
        out.append(f"  classDef {state.name.lower()} fill:{fill},stroke:{border},color:#1d2733{dash}")
        in_state = [ident[n.id] for n in view.nodes.values() if n.state is state]
        out.append(f"  class {','.join(in_state)} {state.name.lower()}")
    return "\n".join(out) + "\n"
