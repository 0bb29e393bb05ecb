"""`sluice dag --format html`: one self-contained page (inline SVG, CSS and script; no network).

The graph is drawn from `layout`'s pure-Python layout, so no system package is needed.
Hovering a stage shows its state and reasons (the SVG `<title>`); clicking it shows its details,
which the page's script builds from the embedded JSON of `dag --format json`.
"""

from __future__ import annotations

import json
from html import escape

from sluice.engine.dag.formats import PALETTE, artifact_label, json_data, tooltip
from sluice.engine.dag.layout import Placed, layout
from sluice.engine.dag.view import DagView, NodeState

_EDGE_LABELS_MAX = 150  # above this many edges, artifact names only show on hover


def _path(points: list[tuple[float, float]]) -> str:
    """Smooth curve through the route: horizontal tangents at every point, as in a layered drawing."""
    (x0, y0), rest = points[0], points[1:]
    d = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mx = (x0 + x1) / 2
        d.append(f"C{mx:.1f},{y0:.1f} {mx:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(d)


def svg(view: DagView, placed: Placed | None = None) -> str:
    placed = placed or layout(view)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="dag" width="{placed.width:.0f}" height="{placed.height:.0f}" '
        f'viewBox="0 0 {placed.width:.0f} {placed.height:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#8795a8"/></marker></defs>',
    ]
    for name, f in placed.groups:
        out.append(
            f'<g class="group"><rect x="{f.x:.1f}" y="{f.y:.1f}" width="{f.w:.1f}" height="{f.h:.1f}" rx="8" '
            f'fill="none" stroke="#7a8ca5" stroke-dasharray="5 4"/>'
            f'<text x="{f.x + 8:.1f}" y="{f.y + 14:.1f}" font-size="11" fill="#3d4b5c">{escape(name)} (matrix)</text></g>'
        )
    labels = len(view.edges) <= _EDGE_LABELS_MAX
    for e in view.edges:
        pts = placed.routes[(e.upstream, e.downstream)]
        dash = "" if e.artifacts else ' stroke-dasharray="4 3"'
        title = escape(f"{e.upstream} → {e.downstream}" + (f": {', '.join(e.artifacts)}" if e.artifacts else " (needs)"))
        out.append(
            f'<g class="edge"><title>{title}</title><path d="{_path(pts)}" fill="none" stroke="#8795a8" '
            f'stroke-width="1.3" marker-end="url(#arrow)"{dash}/>'
        )
        if labels and e.artifacts:
            (x0, y0), (x1, y1) = pts[0], pts[1]
            out.append(
                f'<text x="{(x0 + x1) / 2:.1f}" y="{(y0 + y1) / 2 - 4:.1f}" font-size="10" fill="#56657a" '
                f'text-anchor="middle">{escape(artifact_label(e))}</text>'
            )
        out.append("</g>")
    for sid, b in placed.boxes.items():
        n = view.nodes[sid]
        border, fill = PALETTE[n.state]
        dash = ' stroke-dasharray="5 3"' if n.state is NodeState.NEVER_RUN else ""
        state = n.state.value if n.state else "none"
        out.append(
            f'<g class="node" data-id="{escape(sid)}" data-state="{state}" tabindex="0"><title>{escape(tooltip(n))}</title>'
            f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="7" '
            f'fill="{fill}" stroke="{border}" stroke-width="1.5"{dash}/>'
            f'<text x="{b.cx:.1f}" y="{b.y + 17:.1f}" font-size="12" font-weight="bold" text-anchor="middle" '
            f'fill="#1d2733">{escape(_fit(sid, b.w))}</text>'
            f'<text x="{b.cx:.1f}" y="{b.y + 33:.1f}" font-size="11" text-anchor="middle" '
            f'fill="#56657a">{escape(_fit(n.summary, b.w))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _fit(text: str, width: float) -> str:
    room = int((width - 16) / 7)
    return text if len(text) <= room else text[: max(room - 1, 1)] + "…"


_CSS = """
body{margin:0;font:14px/1.4 "DejaVu Sans",Helvetica,Arial,sans-serif;color:#1d2733;background:#fbfcfd}
header{padding:10px 16px;border-bottom:1px solid #dde3ea;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
h1{font-size:18px;margin:0}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:4px;vertical-align:-1px;border:1.5px solid}
main{display:flex;height:calc(100vh - 52px)}
#graph{flex:1;overflow:auto;padding:8px}
#details{width:340px;overflow:auto;border-left:1px solid #dde3ea;padding:10px 14px;background:#fff}
#details h2{font-size:15px;margin:8px 0 4px}
.stage{border-bottom:1px solid #eef1f5;padding:6px 0;cursor:pointer}
.stage.selected{background:#eef5ff}
.stage code{font-size:12px;word-break:break-all}
.reason{font-size:12px;color:#7a4b00}
g.node{cursor:pointer} g.node.selected rect{stroke:#1565c0;stroke-width:3}
"""

_JS = """
(function(){
  var data = JSON.parse(document.getElementById('dag-data').textContent);
  var list = document.getElementById('stage-list');
  var rows = {};
  data.nodes.forEach(function(n){
    var div = document.createElement('div');
    div.className = 'stage'; div.dataset.id = n.id;
    var h = document.createElement('h2'); h.textContent = n.id; div.appendChild(h);
    var what = document.createElement('code'); what.textContent = n.summary; div.appendChild(what);
    function kv(label, obj){
      var keys = Object.keys(obj || {}); if(!keys.length) return;
      var p = document.createElement('div'); p.style.fontSize = '12px';
      p.textContent = label + ': ' + keys.map(function(k){return k + ' = ' + obj[k];}).join(', ');
      div.appendChild(p);
    }
    kv('matrix', n.matrix); kv('inputs', n.inputs); kv('outputs', n.outputs);
    if (n.state) {
      var r = document.createElement('div'); r.className = 'reason';
      r.textContent = n.state + (n.reasons && n.reasons.length ? ': ' + n.reasons.join('; ') : '');
      div.appendChild(r);
    }
    div.addEventListener('click', function(){ select(n.id); });
    list.appendChild(div); rows[n.id] = div;
  });
  function select(id){
    document.querySelectorAll('.selected').forEach(function(e){ e.classList.remove('selected'); });
    var row = rows[id]; if (row) { row.classList.add('selected'); row.scrollIntoView({block:'nearest'}); }
    document.querySelectorAll('g.node').forEach(function(g){ if (g.dataset.id === id) g.classList.add('selected'); });
  }
  document.querySelectorAll('g.node').forEach(function(g){
    g.addEventListener('click', function(){ select(g.dataset.id); });
  });
  document.getElementById('details').dataset.ready = String(data.nodes.length);
})();
"""


def html_page(view: DagView) -> str:
    data = json.dumps(json_data(view), default=str).replace("</", "<\\/")  # cannot close the script tag
    legend = "".join(
        f'<span><i style="background:{PALETTE[s][1]};border-color:{PALETTE[s][0]}"></i>{s.value}</span>'
        for s in NodeState
        if any(n.state is s for n in view.nodes.values())
    )
    title = escape(f"{view.name}: stage graph")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n<body>'
        f"<header><h1>{escape(view.name)}</h1><span>{len(view.nodes)} stages · {len(view.edges)} edges · {view.depth} levels</span>"
        f'<span class="legend">{legend}</span></header>\n'
        f'<main><div id="graph">\n{svg(view)}\n</div><aside id="details"><div id="stage-list"></div></aside></main>\n'
        f'<script type="application/json" id="dag-data">{data}</script>\n<script>{_JS}</script>\n</body></html>\n'
    )
