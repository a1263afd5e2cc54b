"""The autoscaler's tick with a fake Prometheus reader and Kubernetes API: scale, status, Events."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from inferfleet.handlers import autoscaler
from inferfleet.metrics.prometheus import MetricsUnavailableError
from inferfleet.planning.queue_queries import QueueSample
from inferfleet.runtime.config import OperatorConfig, PeeringConfig, PrometheusConfig
from inferfleet.runtime.operator import OperatorRuntime
from tests.unit.kube_fakes import SMALL_SPEC, FakeKube, runtime, service

pytestmark = pytest.mark.unit
KEY = ("ml", "llama")
SCALED = {
    **SMALL_SPEC,
    "engine": {"kind": "vllm", "maxConcurrentRequests": 8},
    "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetQueueDepth": 4},
}


class FakeReader:
    def __init__(self, fleet: dict[tuple[str, str], QueueSample] | Exception, custom: bool = False) -> None:
        self.config = PrometheusConfig(url="http://prom:9090", custom_queries=custom)
        self._fleet = fleet
        self.queries: list[str] = []

    def read_fleet(self) -> dict[tuple[str, str], QueueSample]:
        if isinstance(self._fleet, Exception):
            raise self._fleet
        return self._fleet

    def submit_override(self, key: Any, query: str, done: Callable[[Future[QueueSample]], None]) -> bool:
        self.queries.append(query)
        future: Future[QueueSample] = Future()
        future.set_result(QueueSample(50.0, 4.0))
        done(future)
        return True


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    return FakeKube(monkeypatch)


def tick(rt: OperatorRuntime, reader: FakeReader, body: dict[str, Any]) -> None:
    index = {KEY: [body]}
    autoscaler.autoscale_tick(rt, reader, index, now=1000.0)  # type: ignore[arg-type]


def ready_service(spec: dict[str, Any] = SCALED) -> dict[str, Any]:
    body = service(spec=spec)
    body["status"] = {"readyReplicas": 1, "replicas": 1}
    return body


def metrics_condition(status: dict[str, Any]) -> tuple[str, str]:
    condition = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    return condition["status"], condition["reason"]


def test_a_long_queue_scales_up_through_the_scale_subresource_with_an_event(kube: FakeKube) -> None:
    rt = runtime()
    tick(rt, FakeReader({KEY: QueueSample(waiting=60.0, running=8.0, completion_rate=1.0)}), ready_service())
    assert len(kube.scaled) == 1
    assert kube.scaled[0] > 1
    assert [(t, m.split(":")[0]) for t, _, m in kube.events] == [("Normal", f"scaled 1 -> {kube.scaled[0]}")]
    assert rt.state(KEY, "uid-llama").written_status == kube.statuses[-1]


def test_without_metrics_replicas_hold_and_a_warning_says_why_once(kube: FakeKube) -> None:
    rt, body = runtime(), ready_service()
    reader = FakeReader(MetricsUnavailableError("Prometheus at http://prom:9090 is unreachable"))
    tick(rt, reader, body)
    tick(rt, reader, body)
    assert kube.scaled == []
    assert metrics_condition(kube.statuses[-1]) == ("False", "MetricsUnavailable")
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "MetricsUnavailable")]


def test_a_custom_query_is_refused_when_the_installation_turned_them_off(kube: FakeKube) -> None:
    rt = runtime()
    spec = {**SCALED, "scaling": {**SCALED["scaling"], "query": "sum(my_queue)"}}
    reader = FakeReader({})
    tick(rt, reader, ready_service(spec))
    assert reader.queries == []
    assert metrics_condition(kube.statuses[-1]) == ("False", "CustomQueryDisabled")


def test_a_custom_query_runs_confined_to_the_services_namespace(kube: FakeKube) -> None:
    rt = runtime()
    spec = {**SCALED, "scaling": {**SCALED["scaling"], "query": "sum(my_queue)"}}
    reader = FakeReader({KEY: QueueSample(waiting=0.0, running=8.0, completion_rate=1.0)}, custom=True)
    tick(rt, reader, ready_service(spec))
    assert len(reader.queries) == 1
    assert 'namespace="ml"' in reader.queries[0]
    assert len(kube.scaled) == 1
    assert kube.scaled[0] > 1


def test_services_without_scaling_or_being_deleted_are_not_looked_at(kube: FakeKube) -> None:
    rt = runtime()
    deleting = ready_service()
    deleting["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:00Z"
    for body in (ready_service(SMALL_SPEC), deleting):
        tick(rt, FakeReader(MetricsUnavailableError("down")), body)
    assert (kube.statuses, kube.scaled) == ([], [])


def test_a_standby_never_ticks(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    peering = PeeringConfig(name="inferfleet", identity="standby", priority=0)
    rt = OperatorRuntime(OperatorConfig(peering=peering), api=object())
    monkeypatch.setattr(
        autoscaler, "read_peers", lambda api, p: {"active": {"priority": 10, "lastseen": "x"}}
    )
    monkeypatch.setattr(autoscaler, "compute_peering_active", lambda peers, identity, priority, now: False)
    calls: list[Any] = []
    monkeypatch.setattr(autoscaler, "autoscale_tick", lambda *args: calls.append(args))
    autoscaler.tick(rt, FakeReader({}), {})  # type: ignore[arg-type]
    assert calls == []
    monkeypatch.setattr(autoscaler, "compute_peering_active", lambda peers, identity, priority, now: True)
    autoscaler.tick(rt, FakeReader({}), {})  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_query_that_cannot_be_confined_is_refused_and_one_that_fails_holds_replicas(kube: FakeKube) -> None:
    rt = runtime()
    bad = {**SCALED, "scaling": {**SCALED["scaling"], "query": "foo{"}}
    reader = FakeReader({}, custom=True)
    tick(rt, reader, ready_service(bad))
    assert reader.queries == []
    assert metrics_condition(kube.statuses[-1]) == ("False", "InvalidQuery")

    class FailingReader(FakeReader):
        def submit_override(self, key: Any, query: str, done: Callable[[Future[QueueSample]], None]) -> bool:
            future: Future[QueueSample] = Future()
            future.set_exception(MetricsUnavailableError("the query timed out after 10s"))
            done(future)
            return True

    spec = {**SCALED, "scaling": {**SCALED["scaling"], "query": "sum(my_queue)"}}
    tick(rt, FailingReader({}, custom=True), ready_service(spec))
    assert kube.scaled == []
    assert metrics_condition(kube.statuses[-1]) == ("False", "MetricsUnavailable")


def test_the_pods_starts_are_learned_warm_and_cold_reported_in_status_and_kept_across_a_restart(
    kube: FakeKube,
) -> None:
    body = ready_service()
    body["status"]["weights"] = [{"node": "n1", "state": "Present", "reason": "Fetched"}]
    pods = [
        autoscaler.engine_pod_starts(  # as kopf calls the index with the pod's parts
            name=name,
            namespace="ml",
            meta={"creationTimestamp": created},
            spec={"nodeName": node},
            status={"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready}]},
            labels={"inferfleet.io/service": "llama"},
        )[KEY]
        for name, node, created, ready in (
            ("cold", "n2", "1970-01-01T00:15:00Z", "1970-01-01T00:18:20Z"),  # 200 s, n2 holds no weights
            ("warm", "n1", "1970-01-01T00:16:00Z", "1970-01-01T00:16:25Z"),  # 25 s: n1 Present first
        )
    ]
    rt = runtime()
    sample = QueueSample(waiting=0.0, running=4.0, completion_rate=1.0)
    # The operator's first look at n1 is at t=900 (before "warm" was created at 960).
    autoscaler.autoscale_tick(rt, FakeReader({KEY: sample}), {KEY: [body]}, 900.0, None, {KEY: []})  # type: ignore[arg-type]
    autoscaler.autoscale_tick(rt, FakeReader({KEY: sample}), {KEY: [body]}, 1200.0, None, {KEY: pods})  # type: ignore[arg-type]
    startup = kube.statuses[-1]["startup"]
    assert (startup["warmSeconds"], startup["coldSeconds"], startup["samples"]) == (25.0, 200.0, 2)
    restarted = runtime()  # a new process reads what status kept, and counts no pod twice
    body["status"] = {**kube.statuses[-1], "readyReplicas": 1, "replicas": 1}
    autoscaler.autoscale_tick(restarted, FakeReader({KEY: sample}), {KEY: [body]}, 1215.0, None, {KEY: pods})  # type: ignore[arg-type]
    assert restarted.state(KEY, "uid-llama").scaler.startup.samples == 2  # type: ignore[union-attr]
