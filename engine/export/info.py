"""Reading the repository for an export: its root, install files, and the remotes config.

Only reads; every path it returns is relative to the repository root, so the document does
not depend on where `sluice export` was started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sluice.engine.compile import Pipeline
from sluice.engine.export.protocol import ExportInfo, Options, Remote
from sluice.engine.limits import Limits
from sluice.engine.remote.config import FILE_NAME, Remotes

DEPENDENCY_FILES = ("requirements.txt", "pyproject.toml", "setup.py", "setup.cfg")


def repo_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `.git`, else `start`: GitHub checks out there."""
    start = Path(os.path.abspath(start))
    return next((p for p in (start, *start.parents) if (p / ".git").exists()), start)


def relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def gather(target: str, pipeline: Pipeline, reports: Iterable[str], output: Path, options: Options, root: Path) -> ExportInfo:
    """The facts an exporter renders; `reports` are workspace-relative output paths."""
    workspace = pipeline.spec.workspace
    ws = relative(workspace, root)
    found = tuple(name for name in DEPENDENCY_FILES if (root / name).is_file())
    pipeline_file = relative(pipeline.spec.file, root)
    return ExportInfo(
        target=target,
        pipeline_file=pipeline_file,
        workspace=ws,
        output=relative(output, root),
        # The default location, whatever this shell's SLUICE_CACHE_DIR says: the CI runner has none.
        cache_dir=_join(ws, ".sluice/cache"),
        reports=tuple(sorted({_join(ws, r) for r in reports})),
        install=options.install if options.install is not None else _install(found),
        dependency_files=found or (pipeline_file,),  # setup-python's pip cache needs some file to key on
        options=options,
        remote=configured_remote(workspace, root, options.remote),
    )


def _join(ws: str, rel: str) -> str:
    return rel if ws == "." else f"{ws}/{rel}"


def _install(found: tuple[str, ...]) -> str:
    if "requirements.txt" in found:
        return "python -m pip install -r requirements.txt"
    if found:
        return "python -m pip install ."
    return "python -m pip install sluice"


def configured_remote(workspace: Path, root: Path, wanted: str | None) -> Remote | None:
    """The remote the workflow uses (`wanted`, else the default), read as `sluice run --remote` reads
    it; None when no remote is configured and none was asked for."""
    path = workspace / FILE_NAME
    remotes = Remotes.read(path, Limits.from_env(), relative(path, root))
    if not remotes.remotes and wanted is None:
        return None
    chosen = remotes.pick(wanted)
    return Remote(chosen.name, chosen.url, chosen.read_only, chosen.require_signed)
