"""The example pipeline end to end through the CLI: runs, skips when unchanged, re-runs only what a hyperparameter touches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "breast-cancer"
STAGES = {"export", "validate", "drift", "split", "train", "evaluate", "gate", "benchmark"}


def _run(workspace: Path) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "run", "-f", str(workspace / "pipeline.yaml"), "--json"],
        capture_output=True, text=True, cwd=workspace,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: stage["outcome"] for name, stage in json.loads(proc.stdout)["stages"].items()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("example") / "breast-cancer"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".sluice", "data", "models", "reports", "sluice.lock"))
    return target


def test_first_run_runs_every_stage(workspace):
    assert _run(workspace) == dict.fromkeys(STAGES, "ran")
    metadata = json.loads((workspace / "models" / "model" / "metadata.json").read_text())
    assert metadata["target"] == "diagnosis" and metadata["best_params"] is not None
    assert json.loads((workspace / "reports" / "gate.json").read_text())["passed"]
    assert json.loads((workspace / "reports" / "drift.json").read_text())["drifted"] == []


def test_second_run_skips_everything(workspace):
    assert _run(workspace) == dict.fromkeys(STAGES, "skipped")


def test_a_hyperparameter_change_reruns_train_and_its_dependents_only(workspace):
    spec = workspace / "pipeline.yaml"
    text = spec.read_text()
    assert "grid: {C: [0.01, 0.1, 1.0, 10.0]}" in text
    spec.write_text(text.replace("grid: {C: [0.01, 0.1, 1.0, 10.0]}", "grid: {C: [0.01, 0.1, 1.0]}"))
    outcomes = _run(workspace)
    assert {name for name, outcome in outcomes.items() if outcome == "ran"} == {"train", "evaluate", "gate", "benchmark"}
    assert {outcome for name, outcome in outcomes.items() if name not in {"train", "evaluate", "gate", "benchmark"}} == {"skipped"}
