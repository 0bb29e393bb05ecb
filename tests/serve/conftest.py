"""A real trained model and a real uvicorn server for the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import model_dir, sample_table  # noqa: F401  (fixtures)
from tests.support.servers import running


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[str]:
    from sluice.stages.serving.app import create_app

    with running(create_app(model_dir)) as url:
        yield url
