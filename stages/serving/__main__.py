"""`python -m serving MODEL_DIR`: the entry point of the container image and of `serve.smoke`."""

from __future__ import annotations

import argparse
import sys

from . import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serving", description="Serve a Sluice model directory over HTTP.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
