"""A real trained model and a real uvicorn server for the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import write_model_dir, write_sample_table
from tests.support.servers import running


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def sample_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_table(tmp_path_factory.mktemp("data") / "sample.csv")


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[str]:
    from stages.serving.app import create_app

    with running(create_app(model_dir)) as url:
        yield url
