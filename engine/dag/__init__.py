"""The DAG views behind `sluice dag`: a view of the compiled pipeline (`view`), its formats
(`formats`: text, JSON, DOT, Mermaid, Graphviz images), a pure-Python layout (`layout`) for the
self-contained HTML page (`html`), and `render`, which picks one."""
