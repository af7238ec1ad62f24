"""``python -m scalopt``: the command line."""

import sys

from scalopt.cli import main

sys.exit(main())
