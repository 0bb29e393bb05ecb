"""What a Python file imports, read with `ast` (nothing is executed)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def imported_modules(path: Path, dynamic: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) for each absolute import: `import a.b` and `from a.b import c` give `a.b`.
    With `dynamic`, also `importlib.import_module("a.b")` with a literal name."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.lineno, node.module or ""
        elif (
            dynamic
            and isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield node.lineno, str(node.args[0].value)
