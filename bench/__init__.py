"""Benchmarks that print ratios against baselines (see DESIGN.md, "Benchmarks")."""
