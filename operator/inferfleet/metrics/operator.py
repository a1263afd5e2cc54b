"""The operator's own Prometheus metrics, served on `inferfleet run --metrics-port`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "inferfleet_reconcile_total",
    "Reconciles of InferenceServices, by trigger and result.",
    ["trigger", "result"],
)
RECONCILE_SECONDS = Histogram(
    "inferfleet_reconcile_duration_seconds",
    "Time to reconcile one InferenceService (plan, apply, status).",
    ["trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STATUS_WRITES = Counter("inferfleet_status_writes_total", "Status updates written to InferenceServices.")
REPLICAS = Gauge(
    "inferfleet_inferenceservice_replicas",
    "Replicas of each InferenceService: desired and ready.",
    ["namespace", "name", "state"],
)
API_THROTTLED = Counter(
    "inferfleet_kube_api_throttled_total",
    "Kubernetes API requests the server answered 429 Too Many Requests; each is retried after Retry-After.",
)
SCALING_DECISIONS = Counter(
    "inferfleet_scaling_decisions_total",
    "Replica changes the autoscaler made, by direction (up/down) and the decision's reason.",
    ["namespace", "name", "direction", "reason"],
)
AUTOSCALER_TICKS = Counter(
    "inferfleet_autoscaler_ticks_total",
    "Autoscaler ticks this instance ran (a standby skips them); each sends one Prometheus query.",
)
PLACEMENT_FAILURES = Counter(
    "inferfleet_placement_failures_total",
    "Replica groups that could not be placed whole when planned, by reason.",
    ["reason"],
)


@contextmanager
def track_reconcile(trigger: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    except Exception:
        RECONCILES.labels(trigger, "error").inc()
        raise
    else:
        RECONCILES.labels(trigger, "success").inc()
    finally:
        RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)


def record_replicas(namespace: str, name: str, desired: int, ready: int) -> None:
    REPLICAS.labels(namespace, name, "desired").set(desired)
    REPLICAS.labels(namespace, name, "ready").set(ready)


PER_SERVICE = (REPLICAS, SCALING_DECISIONS)
"""Every series labelled by one InferenceService: a deleted service's go with it."""


def forget_service_metrics(namespace: str, name: str) -> None:
    for metric in PER_SERVICE:
        metric.remove_by_labels({"namespace": namespace, "name": name})


def serve_metrics(port: int, address: str) -> None:
    start_http_server(port, addr=address)
