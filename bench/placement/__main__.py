"""`python -m bench.placement`: place the same arrivals under every arm, print a table (or JSON)."""

from __future__ import annotations

import sys

from bench.placement.cli import main

sys.exit(main())
