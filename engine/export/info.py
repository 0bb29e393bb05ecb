"""Reading the repository for an export: its root, install files, and the remotes config.

Only reads; every path it returns is relative to the repository root, so the document does
not depend on where `sluice export` was started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from sluice.engine.compile import Pipeline
from sluice.engine.errors import Location, Problem, SpecError, did_you_mean
from sluice.engine.export.protocol import ExportInfo, Options, Remote
from sluice.engine.limits import Limits
from sluice.engine.load import load_file

# The committed remotes config beside the pipeline, written by `sluice remote add`
# (engine/remote/config.py on the remote branch; once both land, read it through that module).
REMOTES_FILE = "sluice.remotes.yaml"
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
        remote=choose_remote(read_remotes(workspace / REMOTES_FILE, relative(workspace / REMOTES_FILE, root)), options.remote),
    )


def _join(ws: str, rel: str) -> str:
    return rel if ws == "." else f"{ws}/{rel}"


def _install(found: tuple[str, ...]) -> str:
    if "requirements.txt" in found:
        return "python -m pip install -r requirements.txt"
    if found:
        return "python -m pip install ."
    return "python -m pip install sluice"


def read_remotes(path: Path, display: str) -> tuple[Mapping[str, Remote], str | None]:
    """The configured remotes by name, and the default one's name; none when the file is absent.

    Of the file (`version: 1`, `default: NAME`, `remotes: {NAME: {url: URL, read_only: BOOL,
    require_signed: BOOL, ...}}`) only what the workflow depends on is read; it is untrusted
    input: read through the guarded loader, every problem located.
    """
    if not path.is_file():
        return {}, None
    doc = load_file(path, display, Limits.from_env())
    data = doc.data
    problems: list[Problem] = []
    remotes: dict[str, Remote] = {}
    table = data.get("remotes") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise SpecError([Problem(doc.location(("remotes",)), "expected a mapping 'remotes: {NAME: {url: URL}}'", ("remotes",))])
    for name, body in table.items():
        where = ("remotes", name)
        url = body.get("url") if isinstance(body, dict) else None
        flags = [body.get(f, False) if isinstance(body, dict) else False for f in ("read_only", "require_signed")]
        if not isinstance(url, str) or not all(isinstance(f, bool) for f in flags):
            message = "expected {url: URL} with optional read_only and require_signed: true|false"
            problems.append(Problem(doc.location(where), message, where))
            continue
        remotes[str(name)] = Remote(str(name), url, *flags)
    default = data.get("default")
    if default is not None and default not in remotes:
        problems.append(
            Problem(doc.location(("default",)), f"no remote named '{default}'", ("default",), did_you_mean(str(default), remotes))
        )
    if problems:
        raise SpecError(problems)
    return remotes, default


def choose_remote(config: tuple[Mapping[str, Remote], str | None], wanted: str | None) -> Remote | None:
    remotes, default = config
    if wanted is not None:
        if wanted not in remotes:
            hint = did_you_mean(wanted, remotes)
            raise SpecError([Problem(Location("command line"), f"no remote named '{wanted}' is configured", hint=hint)])
        return remotes[wanted]
    if default is not None:
        return remotes[default]
    if len(remotes) > 1:
        message = f"several remotes are configured ({', '.join(sorted(remotes))}) and none is the default: name one with --remote"
        raise SpecError([Problem(Location("command line"), message)])
    return next(iter(remotes.values()), None)
