"""`python -m bench.autoscale`: replay a trace under every policy, print ratios (or JSON)."""

from __future__ import annotations

import sys

from bench.autoscale.cli import main

sys.exit(main())
