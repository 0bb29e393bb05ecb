"""No committed file keeps a merge's conflict markers (docs/remote.md once carried a whole conflict)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(rb"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def test_no_tracked_file_holds_conflict_markers() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing says which files are committed")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    found = []
    for name in filter(None, tracked):
        path = ROOT / name.decode()
        if path.is_file() and not path.is_symlink() and (m := _MARKER.search(path.read_bytes())):
            found.append(f"{name.decode()}: {m.group(0).decode()!r}")
    assert not found, found
