"""Simulated inference engines and load, used by the demo, the e2e tests and the benchmarks."""
