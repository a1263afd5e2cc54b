"""The local GPU cluster: upstream control-plane binaries, KWOK GPU nodes and Prometheus.

Development and test tooling shared by the demo, the tests and the benchmarks.
It is not part of the operator that runs in production.
"""
