"""The operator's /metrics show reconciles, status writes and replicas moving while it works."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.integration.test_reconcile import create, small_service, wait_ready

pytestmark = pytest.mark.usefixtures("crds_installed")


def scrape(op: OperatorProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(op.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_reconcile_counters_and_replica_gauges_move_during_a_reconcile(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    op = run_operator(namespaces=[namespace])
    before = scrape(op)
    reconciles = (
        "inferfleet_reconcile_total",
        frozenset({("trigger", "inferenceservice"), ("result", "success")}),
    )
    assert before.get(reconciles, 0) == 0

    create(cluster, namespace, small_service("observed"))
    wait_ready(cluster, namespace, "observed")
    ready = ("inferfleet_inferenceservice_replicas",
             frozenset({("namespace", namespace), ("name", "observed"), ("state", "ready")}))  # fmt: skip
    after = wait_for(lambda: (m := scrape(op)).get(ready) == 1 and m, timeout=30, what="the ready gauge at 1")
    assert after[reconciles] >= 1
    assert after[("inferfleet_status_writes_total", frozenset())] > before.get(
        ("inferfleet_status_writes_total", frozenset()), 0
    )
    count = ("inferfleet_reconcile_duration_seconds_count", frozenset({("trigger", "inferenceservice")}))
    assert after[count] >= 1
