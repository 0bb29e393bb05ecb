"""Session fixtures shared by tests/serve and tests/deploy; each conftest re-exports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.models import write_model_dir, write_sample_table


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def sample_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_table(tmp_path_factory.mktemp("data") / "sample.csv")
