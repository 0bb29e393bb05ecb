"""Runs plugins the way the engine does, without the engine: a StageContext over tmp directories."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sluice.engine.plugin import Plugin, StageContext


class StageHarness:
    def __init__(self, root: Path):
        self.root = root
        self.state_dir = root / "state"

    def context(self, config: Mapping[str, Any], inputs: Mapping[str, Path], outputs: Mapping[str, str]) -> StageContext:
        staging = self.root / "staging"
        return StageContext(
            stage="under-test",
            config=config,
            inputs=dict(inputs),
            outputs={name: staging / rel for name, rel in outputs.items()},
            params={},
            workspace=self.root,
            state_dir=self.state_dir,
            log=logging.getLogger("sluice.test"),
        )

    def run(self, plugin: Plugin, config: Mapping[str, Any], inputs: Mapping[str, Path], outputs: Mapping[str, str]) -> dict[str, Path]:
        """Validates the config as `sluice run` would, runs the plugin, returns the output paths."""
        problems = config_problems(plugin, config)
        assert not problems, problems
        ctx = self.context(config, inputs, outputs)
        plugin.run(ctx)
        return dict(ctx.outputs)


def config_problems(plugin: Plugin, config: Mapping[str, Any], *, preflight: bool = True) -> list[str]:
    """Schema errors, then check(), then preflight(): what validate and run report before any stage starts."""
    errors = [e.message for e in Draft202012Validator(plugin.config_schema).iter_errors(config)]
    if errors:
        return errors
    problems = list(plugin.check(config))
    if preflight:
        problems += list(plugin.preflight(config))
    return [f"{'.'.join(map(str, p.path))}: {p.message}" + (f" (did you mean '{p.hint}'?)" if p.hint else "") for p in problems]


@pytest.fixture
def harness(tmp_path: Path) -> StageHarness:
    return StageHarness(tmp_path)


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def write(frame: Any, name: str = "table.csv") -> Path:
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def cancer_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A breast-cancer classifier trained by sklearn.train, with its train and test tables."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from sluice.stages.sklearn_train import TrainStage

    root = tmp_path_factory.mktemp("cancer")
    frame = load_breast_cancer(as_frame=True).frame
    frame = frame.assign(target=frame["target"].map({0: "malignant", 1: "benign"}))
    train, test = train_test_split(frame, test_size=0.3, random_state=0, stratify=frame["target"])
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    config = {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "target": "target",
        "params": {"max_iter": 5000},
        "preprocessing": {"scale": True},
    }
    model = StageHarness(root).run(TrainStage(), config, {"train": root / "train.csv"}, {"model": "model"})["model"]
    return {"model": model, "train": root / "train.csv", "test": root / "test.csv"}
