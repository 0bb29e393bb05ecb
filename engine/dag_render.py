"""Renders a DagView in the format asked for: the one place that knows every renderer."""

from __future__ import annotations

from collections.abc import Callable

from engine import dag_formats
from engine.dag_html import html_page
from engine.dagview import FORMATS, DagView


def render(view: DagView, fmt: str, *, color: bool = False) -> str | bytes:
    """`view` in one of FORMATS; bytes for PNG. Raises ToolMissing when Graphviz is needed and absent."""
    if fmt == "html":
        return html_page(view)
    renderers: dict[str, Callable[[], str | bytes]] = {
        "text": lambda: dag_formats.text_view(view, color=color),
        "json": lambda: dag_formats.json_view(view),
        "dot": lambda: dag_formats.dot_source(view),
        "mermaid": lambda: dag_formats.mermaid(view),
        "svg": lambda: dag_formats.graphviz(view, "svg").decode(),
        "png": lambda: dag_formats.graphviz(view, "png"),
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderers[fmt]()
