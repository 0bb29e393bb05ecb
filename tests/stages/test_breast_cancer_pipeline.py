"""The example pipeline end to end through the CLI: runs, skips when unchanged, re-runs only what a hyperparameter touches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "breast-cancer"
STAGES = {"export", "validate", "drift", "split", "train", "evaluate", "gate", "benchmark", "smoke"}
DOWNSTREAM_OF_TRAIN = {"train", "evaluate", "gate", "benchmark", "smoke"}


def _run(workspace: Path, *args: str) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "run", "-f", str(workspace / "pipeline.yaml"), "--json", *args],
        capture_output=True,
        text=True,
        cwd=workspace,
        check=False,
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
    outcomes = _run(workspace, "--set", "train.C_grid=[0.01, 0.1, 1.0]")
    assert {name for name, outcome in outcomes.items() if outcome == "ran"} == DOWNSTREAM_OF_TRAIN
    assert {outcome for name, outcome in outcomes.items() if name not in DOWNSTREAM_OF_TRAIN} == {"skipped"}


def test_changing_it_back_restores_from_the_cache(workspace):
    outcomes = _run(workspace)
    assert outcomes == {name: "restored" if name in DOWNSTREAM_OF_TRAIN else "skipped" for name in STAGES}
