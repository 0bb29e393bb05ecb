"""Stages die with the engine: a watchdog process ends a run's stages when the engine is gone.

Stages run in sessions of their own (so a timeout or Ctrl-C can kill each whole group), which
also means `kill -9` of `sluice run`, or of its process group, would leave them running. The
executor starts this file as a script (`python -I -S watchdog.py RUN_ID GRACE`: standard library
only, so it costs milliseconds) with the first stage that executes, in a session of its own so
that killing the engine's group spares it. Its stdin is a pipe only the engine writes: `+PGID`
when a stage starts, `-PGID` when it ends, `done` when the run is over. End of file without
`done` means the engine died: every live group, and every process whose environment carries
the run's SLUICE_RUN_ID, gets SIGTERM, then SIGKILL after GRACE seconds.

engine/guard.py is the engine's side; it uses the /proc helpers here too, to find a dead run's
stages that are still alive (by SLUICE_RUN_ID, never by a PID alone) and stop them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable


def run_processes(run_id: str, stage: str | None = None) -> list[int] | None:
    """Live processes whose environment names this run (and stage); None where there is no /proc to tell."""
    if not os.path.isdir("/proc/self"):
        return None
    want = [f"SLUICE_RUN_ID={run_id}".encode()]
    if stage is not None:
        want.append(f"SLUICE_STAGE={stage}".encode())
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if all(w in env for w in want) and alive(int(name)):
            found.append(int(name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is gone (a container's init may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def terminate(pids: Iterable[int] = (), groups: Iterable[int] = (), grace: float = 5.0) -> bool:
    """SIGTERM each process and group, SIGKILL what is left after `grace` seconds; True if any needed SIGKILL."""
    pids, groups = set(pids), set(groups)
    _signal(pids, groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        pids = {p for p in pids if alive(p)}
        groups = {g for g in groups if group_alive(g)}
        if not pids and not groups:
            return False
        time.sleep(0.05)
    _signal(pids, groups, signal.SIGKILL)
    return True


def _signal(pids: set[int], groups: set[int], sig: signal.Signals) -> None:
    for g in groups:
        with contextlib.suppress(OSError):
            os.killpg(g, sig)
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def main(argv: list[str]) -> int:
    run_id, grace = argv[1], float(argv[2])
    live: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if line == b"done":
            return 0
        try:
            pgid = int(line[1:])
        except ValueError:
            continue
        if line[:1] == b"+":
            live.add(pgid)
        else:
            live.discard(pgid)
    # The engine is gone. Where /proc can vouch for them, end exactly this run's processes (a
    # group id may have been reused since); elsewhere, the groups the engine said were live.
    pids = run_processes(run_id)
    if pids is None:
        terminate(groups=live, grace=grace)
    else:
        terminate(pids, {g for g in live if g in pids}, grace)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only end of file on stdin ends the watch
    sys.exit(main(sys.argv))
