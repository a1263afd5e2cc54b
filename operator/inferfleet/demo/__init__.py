"""`inferfleet demo`: the local GPU cluster, Prometheus, the operator and trace-driven load, end to end.

driver (bring-up, load, teardown) → view (the live table) → report (markdown and PNG at the end),
with starts (each replica start marked cold or warm by the node weights cache's fetch Jobs).
"""

from inferfleet.demo.driver import run_demo

__all__ = ["run_demo"]
