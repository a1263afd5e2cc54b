"""`python -m bench.gateway`: every arm on the same sim engines and load, a table (or JSON)."""

from __future__ import annotations

import sys

from bench.gateway.cli import main

sys.exit(main())
