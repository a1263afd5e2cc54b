"""Autoscaling benchmark: a trace through a simulated GPU fleet under inferfleet and baselines.

Run `python -m bench.autoscale --help`; the model and its constants are in README.md here and
in the docstrings of `sim` (the fleet), `policies` (what each policy does) and `workload`
(traces, load scaling, the synthetic generator).
"""
