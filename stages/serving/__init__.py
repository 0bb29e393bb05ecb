"""The model server: FastAPI + uvicorn around one model directory written by `sklearn.train`.

Standalone (no `engine` imports) because `docker.build` copies this package into the image, and
light to import: FastAPI, pandas and sklearn load only when `serve` runs.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8000
KEEP_ALIVE_SECONDS = 5  # an idle connection is closed after this; below a load balancer's idle timeout
# The largest request line plus headers h11 buffers before answering 400: bounds what a slow or
# hostile client can make the server hold per connection before the body limit applies.
MAX_INCOMPLETE_EVENT_BYTES = 16 * 1024
HEADER_TIMEOUT_SECONDS = 10  # from connecting (or the last response) to a complete request line and headers


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
    uvicorn.Server(server_config(app, host, port)).run()


def server_config(
    app: Any, host: str, port: int, *, keep_alive: int = KEEP_ALIVE_SECONDS, header_timeout: float = HEADER_TIMEOUT_SECONDS
) -> Any:
    """The uvicorn settings: one worker and the connection bounds (a `uvicorn.Config`)."""
    import uvicorn

    from .protocol import with_header_timeout

    # One worker: the model lives in this process, and replicas scale it (Kubernetes, not forks).
    # h11 explicitly (our subclass): its header bound is the one set here; httptools ignores it.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        http=with_header_timeout(header_timeout),
        timeout_keep_alive=keep_alive,
        h11_max_incomplete_event_size=MAX_INCOMPLETE_EVENT_BYTES,
    )


def command(sub: Any) -> None:
    """The `sluice serve` subcommand (entry-point group `sluice.commands`): adds its parser to the
    CLI's subparsers; the parsed arguments carry `run`, which returns the exit code."""
    parser = sub.add_parser("serve", help="serve a trained model over HTTP (POST /predict, /health, /ready, /metrics)")
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options, shared by `sluice serve` and `python -m serving`."""
    parser.add_argument("model_dir", type=Path, help="a model directory written by sklearn.train")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--expect-sha256", type=_sha256, metavar="HEX",
                        help="refuse a model file whose sha256 differs, whatever metadata.json says "
                        "(from a source the model directory cannot rewrite)")  # fmt: skip
    parser.add_argument("--max-in-flight", type=int, help="/predict requests admitted at once; more get 503 (default 8)")
    parser.add_argument("--predict-threads", type=int, help="threads that run predictions (default 1)")


def run(args: argparse.Namespace, stderr: Callable[[str], Any] = sys.stderr.write) -> int:
    """Serves until interrupted: 0; a model that cannot be served: its reason on stderr and 2."""
    from .model import ModelError

    limits = {k: v for k in ("max_in_flight", "predict_threads") if (v := getattr(args, k)) is not None}
    try:
        serve(args.model_dir, host=args.host, port=args.port, expected_sha256=args.expect_sha256, **limits)
    except ModelError as exc:
        stderr(f"error: {exc}\n")
        return 2
    return 0


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256 digest (64 hex digits)")
    return text.lower()
