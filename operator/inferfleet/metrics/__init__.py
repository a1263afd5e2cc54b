"""Metrics: Prometheus queries in (autoscaling) and the operator's own metrics out."""
