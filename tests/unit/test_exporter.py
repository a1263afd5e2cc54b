import urllib.request

from prometheus_client import CollectorRegistry, Gauge

from inferfleet.sim.exporter import start_text_exporter

OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def test_engine_metric_names_keep_their_colons_even_when_openmetrics_is_requested() -> None:
    registry = CollectorRegistry()
    Gauge("vllm:num_requests_waiting", "waiting", ["model_name"], registry=registry).labels("m").set(3)
    exporter = start_text_exporter(registry)
    try:
        request = urllib.request.Request(
            f"http://{exporter.address}/metrics", headers={"Accept": OPENMETRICS_ACCEPT}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        exporter.stop()
    assert 'vllm:num_requests_waiting{model_name="m"} 3.0' in body


def test_the_request_success_counter_is_exported_under_the_engines_name() -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    Counter("vllm:request_success", "done", ["model_name"], registry=registry).labels("m").inc(4)
    exporter = start_text_exporter(registry)
    try:
        with urllib.request.urlopen(f"http://{exporter.address}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        exporter.stop()
    assert 'vllm:request_success_total{model_name="m"} 4.0' in body
