"""`python -m serving MODEL_DIR`: the entry point of the container image and of `serve.smoke`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import DEFAULT_PORT, serve
from .app import MAX_IN_FLIGHT, PREDICT_THREADS
from .model import ModelError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serving", description="Serve a Sluice model directory over HTTP.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--expect-sha256", help="refuse to load a model file whose sha256 differs (from a source the model directory cannot rewrite)")
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT, help=f"/predict requests admitted at once; more get 503 (default {MAX_IN_FLIGHT})")
    parser.add_argument("--predict-threads", type=int, default=PREDICT_THREADS, help=f"threads that run predictions (default {PREDICT_THREADS})")
    args = parser.parse_args(argv)
    try:
        serve(
            args.model_dir,
            host=args.host,
            port=args.port,
            expected_sha256=args.expect_sha256,
            max_in_flight=args.max_in_flight,
            predict_threads=args.predict_threads,
        )
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
