"""`python -m sluice.engine` is the `sluice` command, as `python -m sluice` is."""

from sluice.engine.cli import run

run()
