"""A throwaway copy of this checkout, for tools that must see the project as files (pre-commit, pip wheel)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def copy_checkout(dest: Path) -> Path:
    """The tracked and untracked (not ignored) files of the working tree under `dest`, symlinks kept as symlinks."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=CHECKOUT, capture_output=True, check=True
    ).stdout
    for rel in sorted({r for r in listed.decode().split("\0") if r}):
        src, target = CHECKOUT / rel, dest / rel
        if not src.is_symlink() and not src.exists():
            continue  # deleted in the working tree, not yet in the index
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return dest
