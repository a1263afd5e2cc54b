"""Placement benchmark: the same GPU pod arrivals on fragmented clusters under inferfleet and baselines.

Run `python -m bench.placement --help`; the model, the metrics and the targets are in README.md
here; `cluster` makes the seeded clusters and arrivals, `arms` the heuristic placers, `solver`
the exact CP-SAT one, `metrics` what is counted, `kwok` the replay on the real scheduler.
"""
