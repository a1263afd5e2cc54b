"""`python -m bench.reconcile`: both operators on the same scenario, a table side by side (or JSON)."""

from __future__ import annotations

import sys

from bench.reconcile.cli import main

sys.exit(main())
