"""`python -m sluice.engine` is the `sluice` command, as `python -m sluice` is."""

import sys

from sluice.engine.cli import main

sys.exit(main())
