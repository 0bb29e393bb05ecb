"""Shared fixtures: a temporary workspace and the real `sluice` CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Workspace:
    root: Path

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def sluice(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "sluice", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def run_json(self, *args: str) -> dict[str, str]:
        """`sluice run --json`, returning stage → outcome."""
        res = self.sluice("run", "--json", *args)
        assert res.code in (0, 1), res.err
        return {k: v["outcome"] for k, v in res.json()["stages"].items()}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture(autouse=True, scope="session")
def _schema_check_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compiled schema checks go to a folder of this session's, not the user's cache (engine.schema_check)."""
    os.environ.setdefault("SLUICE_SCHEMA_CACHE", str(tmp_path_factory.mktemp("schema-checks")))
