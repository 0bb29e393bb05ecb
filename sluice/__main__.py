"""`python -m sluice` is the `sluice` command."""

from sluice.engine.cli import run

run()
