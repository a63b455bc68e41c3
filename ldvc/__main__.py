"""`python -m ldvc ...` = the `ldvc` command (ldvc/cli.py)."""

import sys

from ldvc.cli import main

sys.exit(main())
