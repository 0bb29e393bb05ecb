"""Compile Sluice's sources ahead of a benchmark, as an installed package is.

pip compiles a wheel's modules at install; a source checkout run with PYTHONDONTWRITEBYTECODE (or
edited since its last run) compiles every module it imports on every start, which would be
counted against Sluice and not against the peer it is measured beside.
"""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_sources(root: Path = ROOT) -> None:
    if os.environ.get("PYTHONDONTWRITEBYTECODE") or sys.flags.dont_write_bytecode:
        print("note: PYTHONDONTWRITEBYTECODE is set: compiling sluice's modules ahead, as an install would", file=sys.stderr)
    for folder in ("sluice", "engine", "stages", "schemas"):  # py_compile writes bytecode whatever that variable says
        compileall.compile_dir(root / folder, quiet=1)
