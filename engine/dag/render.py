"""Renders a DagView in the format asked for: the one place that knows every renderer."""

from __future__ import annotations

from collections.abc import Callable

from sluice.engine.dag import formats
from sluice.engine.dag.html import html_page
from sluice.engine.dag.view import FORMATS, DagView


def render(view: DagView, fmt: str, *, color: bool = False) -> str | bytes:
    """`view` in one of FORMATS; bytes for PNG. Raises ToolMissing when Graphviz is needed and absent."""
    if fmt == "html":
        return html_page(view)
    renderers: dict[str, Callable[[], str | bytes]] = {
        "text": lambda: formats.text_view(view, color=color),
        "json": lambda: formats.json_view(view),
        "dot": lambda: formats.dot_source(view),
        "mermaid": lambda: formats.mermaid(view),
        "svg": lambda: formats.graphviz(view, "svg").decode(),
        "png": lambda: formats.graphviz(view, "png"),
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderers[fmt]()
