"""`python -m tuner`: the command line (tuner.cli)."""

import sys

from tuner.cli import main

sys.exit(main())
