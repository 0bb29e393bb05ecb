"""`python -m sluice` is the `sluice` command."""

import sys

from sluice.engine.cli import main

sys.exit(main())
