"""The model server: FastAPI + uvicorn around one model directory written by `sklearn.train`.

Standalone (no `engine` imports) because `docker.build` copies this package into the image, and
light to import: FastAPI, pandas and sklearn load only when `serve` runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

DEFAULT_PORT = 8000


def serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    expected_sha256: str | None = None,
    **limits: int,
) -> None:
    """Serves `model_dir` until interrupted; raises ModelError (before listening) if it cannot be served.

    `limits` go to `create_app` (`max_in_flight`, `predict_threads`, ...).
    """
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(Path(model_dir), expected_sha256=expected_sha256, **limits)
    # One worker: the model lives in this process, and replicas scale it (Kubernetes, not forks).
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
