"""`python -m factmem ...`: the CLI without its console script (a source tree on PYTHONPATH)."""

import sys

from factmem.cli import main

sys.exit(main())
