"""`python -m engine` is the `sluice` command."""

import sys

from engine.cli import main

sys.exit(main())
