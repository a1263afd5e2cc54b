"""The local Prometheus scrapes exporters on 127.0.0.1 and answers PromQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Gauge

from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import wait_for
from inferfleet.sim.exporter import start_text_exporter


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge("vllm:num_requests_waiting", "Requests waiting", ["model_name"], registry=registry)
    exporter = start_text_exporter(registry)
    try:
        yield exporter.address, gauge
    finally:
        exporter.stop()


def test_prometheus_scrapes_an_added_target_and_promql_returns_the_exported_value(
    prometheus: LocalPrometheus, exporter: tuple[str, Gauge]
) -> None:
    address, gauge = exporter
    gauge.labels(model_name="llama").set(7)
    prometheus.add_target("engine-probe", address, {"inferfleet_io_service": "llama"})
    prom = PrometheusConnect(url=prometheus.url, disable_ssl=True)
    query = 'sum by (inferfleet_io_service) (vllm:num_requests_waiting{job="engine-probe"})'

    def value() -> float | None:
        result = prom.custom_query(query)
        return float(result[0]["value"][1]) if result else None

    assert wait_for(value, timeout=30, what="the first scrape of the exporter") == 7.0
    assert prom.custom_query(query)[0]["metric"] == {"inferfleet_io_service": "llama"}

    gauge.labels(model_name="llama").set(12)
    wait_for(lambda: value() == 12.0, timeout=30, what="the next scrape to see the new value")
    prometheus.remove_target("engine-probe")
