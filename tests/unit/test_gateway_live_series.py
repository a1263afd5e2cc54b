"""With `--workers N` the supervisor's /metrics leaves out deleted services' and endpoints' series."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from inferfleet.gateway.live_series import LiveCollector, keep_sample, live_file, read_live
from inferfleet.planning.queue_queries import SERVICE_SERIES_LABEL

LIVE = frozenset({("ns", "a"), ("ns", "a", "10.0.0.1:8000")})


@pytest.mark.parametrize(
    ("labels", "kept"),
    [
        ({}, True),  # a series of no service: the process's own
        ({"namespace": "ns", SERVICE_SERIES_LABEL: "a"}, True),
        ({"namespace": "ns", SERVICE_SERIES_LABEL: "a", "code": "200"}, True),
        ({"namespace": "ns", SERVICE_SERIES_LABEL: "b"}, False),  # deleted
        ({"namespace": "other", SERVICE_SERIES_LABEL: "a"}, False),  # same name, other namespace
        ({"namespace": "ns", SERVICE_SERIES_LABEL: "a", "endpoint": "10.0.0.1:8000"}, True),
        ({"namespace": "ns", SERVICE_SERIES_LABEL: "a", "endpoint": "10.0.0.2:8000"}, False),  # gone
    ],
)
def test_a_series_is_served_while_its_service_and_endpoint_are(labels: dict[str, str], kept: bool) -> None:
    assert keep_sample(labels, LIVE) is kept


def test_the_live_keys_are_the_running_workers_union_and_none_before_any_file(tmp_path: Path) -> None:
    assert read_live(tmp_path, [101, 102]) is None
    live_file(tmp_path, 101).write_text(json.dumps([["ns", "a"]]))
    live_file(tmp_path, 102).write_text(json.dumps([["ns", "b"], ["ns", "b", "e:1"]]))
    live_file(tmp_path, 103).write_text(json.dumps([["ns", "c"]]))  # a worker no longer running
    assert read_live(tmp_path, [101, 102]) == {("ns", "a"), ("ns", "b"), ("ns", "b", "e:1")}
    live_file(tmp_path, 102).write_text("[")  # never half-written (os.replace); unreadable: skipped
    assert read_live(tmp_path, [101, 102]) == {("ns", "a")}


WORKER = """
from inferfleet.gateway.metrics import GatewayMetrics
m = GatewayMetrics()
for service in ("kept", "deleted"):
    m.serve("ns", service)
    m.arrivals.labels("ns", service).inc()
    m.serve("ns", service, "e:1")
    m.in_flight.labels("ns", service, "e:1").set(2)
m.serve("ns", "kept", "e:2")
m.in_flight.labels("ns", "kept", "e:2").set(1)
m.forget("ns", "deleted", ["e:1"])
m.forget_endpoint("ns", "kept", "e:2")
m.arrivals.labels("ns", "deleted").inc()  # a request that ended after its service was deleted
print(__import__("os").getpid())
"""


def test_the_supervisor_serves_only_what_its_workers_serve(tmp_path: Path) -> None:
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, check=True)
    pid = int(done.stdout)
    registry = CollectorRegistry()
    registry.register(LiveCollector(str(tmp_path), lambda: [pid]))
    text = generate_latest(registry).decode()
    counted = ("inferfleet_gateway_arrivals", "inferfleet_gateway_in_flight")
    series = sorted(line.split(" ")[0] for line in text.splitlines() if line.startswith(counted))
    service = SERVICE_SERIES_LABEL
    assert series == [
        f'inferfleet_gateway_arrivals_total{{{service}="kept",namespace="ns"}}',
        f'inferfleet_gateway_in_flight_requests{{endpoint="e:1",{service}="kept",namespace="ns"}}',
    ]
    # Without the worker's file (it has not written one yet) nothing is left out
    unfiltered = CollectorRegistry()
    unfiltered.register(LiveCollector(str(tmp_path), lambda: []))
    assert 'service="deleted"' in generate_latest(unfiltered).decode()
