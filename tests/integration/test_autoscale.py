"""Closed loop on the local cluster: simulated engines -> real Prometheus -> operator -> scale subresource."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.sim.engine import EngineConfig, SimEngine
from inferfleet.sim.exporter import start_text_exporter
from inferfleet.sim.fleet import SimulatedFleet, _ready, step_load
from tests.conftest import Cluster
from tests.integration.test_operator_metrics import scrape
from tests.integration.test_reconcile import create, events_for, read, small_service
from tests.support import status_condition

pytestmark = pytest.mark.usefixtures("crds_installed")

TICK = 2  # seconds between autoscaler ticks in these tests
WINDOW = 20  # scale-down stabilization
PASSWORD = "hunter2-not-for-status"


@pytest.fixture
def own_prometheus(tmp_path: Path) -> Iterator[LocalPrometheus]:
    prom = LocalPrometheus(workdir=tmp_path / "prometheus")
    prom.start()
    yield prom
    prom.stop()


def autoscaled(name: str) -> dict[str, Any]:
    body = small_service(name, product="NVIDIA-A100-SXM4-40GB")
    body["spec"]["engine"]["maxConcurrentRequests"] = 4
    body["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 2,
                               "scaleDownStabilizationSeconds": WINDOW}  # fmt: skip
    return body


def start_operator(
    run_operator: Callable[..., OperatorProcess], namespace: str, prom: LocalPrometheus
) -> OperatorProcess:
    return run_operator(
        namespaces=[namespace], extra_args=["--prometheus-url", prom.url, "--autoscale-interval", str(TICK)]
    )


def wait_replicas(
    cluster: Cluster, namespace: str, name: str, check: Callable[[int], bool], timeout: float, what: str
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = read(cluster, namespace, name)
        recorded = obj.get("status", {}).get("scalingHistory")  # written right after the scale
        return obj if check(obj["spec"]["replicas"]) and recorded else None

    return wait_for(probe, timeout=timeout, what=what)


def simulate(
    cluster: Cluster, prom: LocalPrometheus, namespace: str, name: str, rate: float, seconds: float
) -> SimulatedFleet:
    # Each replica runs 4 requests of 2 s at once: 2 req/s.
    return SimulatedFleet(cluster.api_client, prom, namespace, name, "llama", step_load(rate, seconds),
                          max_concurrent=4, service_seconds=2).start()  # fmt: skip


def test_a_step_load_scales_up_drains_the_queue_and_scales_back_down_after_the_window(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    own_prometheus: LocalPrometheus,
) -> None:
    start_operator(run_operator, namespace, own_prometheus)
    create(cluster, namespace, autoscaled("step"))
    fleet = simulate(cluster, own_prometheus, namespace, "step", rate=6, seconds=60)  # needs >= 3 replicas
    try:
        up = wait_replicas(
            cluster, namespace, "step", lambda n: n >= 3, 90, "a scale-up to at least 3 replicas"
        )
        assert up["status"]["scalingHistory"][-1]["reason"]
        wait_for(lambda: fleet.snapshot()[0] >= 3, timeout=60, what="3 engine pods Ready and serving")
        wait_for(
            lambda: fleet.snapshot()[1] <= 2 * fleet.snapshot()[0], timeout=90, what="the queue to drain"
        )
        down = wait_replicas(cluster, namespace, "step", lambda n: n == 1, 60 + WINDOW + 60,
                             "a scale-down to 1 after the load and the window")  # fmt: skip
        assert status_condition(down, "MetricsAvailable")["status"] == "True"
        directions = [(h["from"], h["to"]) for h in down["status"]["scalingHistory"]]
        assert any(b > a for a, b in directions)
        assert any(b < a for a, b in directions)
        reasons = {e.reason for e in events_for(cluster, namespace, "step")}
        assert reasons & {h["reason"] for h in down["status"]["scalingHistory"]}
    finally:
        fleet.stop()


def test_a_prometheus_outage_holds_replicas_and_the_loop_recovers(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    own_prometheus: LocalPrometheus,
) -> None:
    op = start_operator(run_operator, namespace, own_prometheus)
    create(cluster, namespace, autoscaled("outage"))
    fleet = simulate(cluster, own_prometheus, namespace, "outage", rate=6, seconds=600)
    try:
        wait_for(
            lambda: read(cluster, namespace, "outage")["spec"]["replicas"] >= 3, timeout=90, what="scale-up"
        )
        own_prometheus.stop()
        fleet.load = step_load(0, 0)  # were the metrics visible, this would scale down after the window

        def unavailable() -> dict[str, Any] | None:
            obj = read(cluster, namespace, "outage")
            return obj if status_condition(obj, "MetricsAvailable").get("status") == "False" else None

        held = wait_for(unavailable, timeout=30, what="MetricsAvailable=False")
        replicas = held["spec"]["replicas"]
        errors = ("inferfleet_prometheus_query_errors_total", frozenset({("kind", "fleet")}))
        # Longer than the scale-down window, counted in the operator's own failed ticks.
        wait_for(lambda: scrape(op).get(errors, 0) >= (WINDOW + 10) / TICK, timeout=WINDOW + 60,
                 what="the operator to tick through a whole window without metrics")  # fmt: skip
        assert read(cluster, namespace, "outage")["spec"]["replicas"] == replicas
        assert any(e.reason == "MetricsUnavailable" for e in events_for(cluster, namespace, "outage"))

        own_prometheus.start()
        recovered = wait_replicas(cluster, namespace, "outage", lambda n: n == 1, 60 + WINDOW + 60,
                                  "metrics back, idle, scaled down to 1")  # fmt: skip
        assert status_condition(recovered, "MetricsAvailable")["status"] == "True"
    finally:
        fleet.stop()


def test_a_scaling_query_scales_up_reads_only_its_namespace_and_no_message_shows_the_credentials(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    own_prometheus: LocalPrometheus,
) -> None:
    # Another namespace's metric, which a tenant must not read through the operator.
    registry = CollectorRegistry()
    Gauge("secret_metric", "Another tenant's number", registry=registry).set(42)
    secret = start_text_exporter(registry)
    own_prometheus.add_target("secret", secret.address, {"namespace": "kube-system"})
    # Userinfo in the URL: Prometheus ignores it here; it must not surface anywhere.
    url = own_prometheus.url.replace("http://", f"http://inferfleet:{PASSWORD}@")
    op = run_operator(namespaces=[namespace], extra_args=[
        "--prometheus-url", url, "--autoscale-interval", str(TICK), "--allow-custom-queries"])  # fmt: skip
    queued = autoscaled("custom")
    # The namespace matcher is replaced by the service's own, so this reads the service's queue.
    queued["spec"]["scaling"]["query"] = (
        'sum(vllm:num_requests_waiting{inferfleet_io_service="custom", namespace="kube-system"})'
    )
    spy = autoscaled("spy")
    spy["spec"]["scaling"]["query"] = 'max(secret_metric{namespace="kube-system"})'
    create(cluster, namespace, queued)
    create(cluster, namespace, spy)
    fleet = simulate(cluster, own_prometheus, namespace, "custom", rate=6, seconds=600)
    try:
        up = wait_replicas(
            cluster, namespace, "custom", lambda n: n >= 2, 90, "a scale-up from the query's queue"
        )
        assert status_condition(up, "MetricsAvailable")["status"] == "True"
        assert up["status"]["scalingHistory"][-1]["from"] == 1

        def spy_refused() -> dict[str, Any] | None:
            obj = read(cluster, namespace, "spy")
            available = status_condition(obj, "MetricsAvailable")
            return obj if available.get("message") == "scaling.query returned no number" else None

        held = wait_for(spy_refused, timeout=60, what="the spy's query to find nothing in its namespace")
        assert "queueDepth" not in held["status"]
        assert held["spec"]["replicas"] == 1
    finally:
        fleet.stop()
        secret.stop()
    own_prometheus.stop()  # every tenant's condition now says why, without the URL

    def failed() -> dict[str, Any] | None:
        obj = read(cluster, namespace, "custom")
        available = status_condition(obj, "MetricsAvailable")
        return obj if available.get("status") == "False" else None

    message = status_condition(
        wait_for(failed, timeout=30, what="MetricsAvailable=False"), "MetricsAvailable"
    )
    assert message["message"] == "Prometheus query failed: connection refused"
    shown = [str(read(cluster, namespace, n)) for n in ("custom", "spy")]
    shown += [e.message for n in ("custom", "spy") for e in events_for(cluster, namespace, n)]
    assert not [text for text in [*shown, op.log_text()] if PASSWORD in text]


def ready_pod(cluster: Cluster, namespace: str, name: str) -> str:
    core = client.CoreV1Api(cluster.api_client)

    def probe() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{SERVICE_LABEL}={name}").items
        ready = [p.metadata.name for p in pods if _ready(p)]
        return ready[0] if ready else None

    return wait_for(probe, timeout=60, what=f"a Ready pod of {name}")


def test_a_full_kv_cache_scales_up_with_slots_free(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    own_prometheus: LocalPrometheus,
) -> None:
    start_operator(run_operator, namespace, own_prometheus)
    body = autoscaled("kv")
    body["spec"]["engine"]["maxConcurrentRequests"] = 8
    create(cluster, namespace, body)
    pod = ready_pod(cluster, namespace, "kv")
    # The pod's engine: a KV cache of 10 blocks of 4 words, and 18-word prompts (5 blocks each)
    # that decode for 100 s: two fill it, a third waits with 6 of 8 slots free.
    config = EngineConfig(model="llama", host="127.0.0.1", port=0, max_concurrent=8, tokens_per_second=2,
                          block_tokens=4, kv_cache_tokens=40)  # fmt: skip
    engine = SimEngine(config).start()
    labels = {"namespace": namespace, "inferfleet_io_service": "kv", "pod": pod}
    own_prometheus.add_target(f"kv-{pod}", engine.url.removeprefix("http://"), labels)
    try:
        for i in range(3):
            body = json.dumps(
                {"prompt": " ".join(f"w{i}-{j}" for j in range(18)), "max_tokens": 200}
            ).encode()
            request = urllib.request.Request(f"{engine.url}/v1/completions", data=body, method="POST")
            threading.Thread(target=lambda r=request: suppress_errors(r), daemon=True).start()
        wait_for(
            lambda: engine.counts().waiting == 1, timeout=10, what="the third prompt to wait for KV room"
        )
        up = wait_replicas(cluster, namespace, "kv", lambda n: n >= 2, 45, "a scale-up on the full KV cache")
        last = up["status"]["scalingHistory"][-1]
        assert "KV cache 100% full" in last["message"], last
        assert engine.counts().running == 2  # the batch limit, 8, was never reached
    finally:
        own_prometheus.remove_target(f"kv-{pod}")
        engine.stop(drain_seconds=0)


def suppress_errors(request: urllib.request.Request) -> None:
    """Send a request whose answer nobody waits for (the engine cuts it at the end)."""
    with suppress(OSError), urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def test_the_operator_learns_a_services_start_to_ready_from_its_pods(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    own_prometheus: LocalPrometheus,
) -> None:
    start_operator(run_operator, namespace, own_prometheus)
    create(cluster, namespace, autoscaled("starts"))

    def learned() -> dict[str, Any] | None:
        startup = read(cluster, namespace, "starts").get("status", {}).get("startup") or {}
        return startup if startup.get("samples", 0) >= 1 else None

    startup = wait_for(learned, timeout=60, what="status.startup with the first pod's start")
    pods = (
        client.CoreV1Api(cluster.api_client)
        .list_namespaced_pod(namespace, label_selector=f"{SERVICE_LABEL}=starts")
        .items
    )
    ready = [
        (c.last_transition_time - p.metadata.creation_timestamp).total_seconds()
        for p in pods
        for c in p.status.conditions or []
        if c.type == "Ready" and c.status == "True"
    ]
    # One replica (no load), no weights cache in this cluster: its start is cold, and it is what
    # the pod's own creation and Ready times say (KWOK makes pods Ready without delay here).
    assert len(ready) == 1
    assert startup.get("warmSeconds") is None
    assert startup["recentCold"] == ready
    assert startup["coldSeconds"] == ready[0]
