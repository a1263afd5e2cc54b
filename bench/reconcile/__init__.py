"""Reconcile benchmark: inferfleet and a naive LIST-per-reconcile operator on the same KWOK fleet.

Run `python -m bench.reconcile --help`; what is measured and how is in README.md here and in the
docstrings of `scenario` (the phases), `audit` (request counting) and `naive_operator`.
"""
