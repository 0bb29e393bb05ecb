"""Upkeep of the workspace and the cache: leftovers of crashed runs.

A cache folder may be shared by checkouts that this one cannot see: a temp file younger than
`durable.GRACE_SECONDS` may belong to a write in progress elsewhere.
"""

from __future__ import annotations

from engine.durable import remove_tree, sweep_temps
from engine.state import Layout


def sweep_leftovers(layout: Layout, current_run: str | None = None) -> int:
    """Remove what killed runs left; call with the workspace lock held. How many went.

    Staging folders are only written under that lock, so any but `current_run`'s is dead;
    the cache's temp files may be another checkout's write in progress, so only dead writers'.
    """
    gone = 0
    staging = layout.meta / "tmp"
    for path in staging.iterdir() if staging.is_dir() else ():
        if path.name != current_run:
            remove_tree(path)
            gone += 1
    gone += sweep_temps(layout.workspace, f".{layout.lock_file.name}*.tmp")
    gone += sweep_temps(layout.meta, ".*.tmp")
    gone += sweep_temps(layout.runs, ".*.tmp")
    gone += sweep_temps(layout.cache_dir / "tmp")
    return gone
