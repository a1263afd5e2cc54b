"""A scale-down removes the replica that loses the least: real engines at the pods' IPs, real
Prometheus, the operator's autoscaler, and the controller-manager's ReplicaSet doing the removal."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.pod_engines import PodEngine, PodEngines
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.victims import DELETION_COST_ANNOTATION
from tests.conftest import Cluster
from tests.integration.test_autoscale import autoscaled, own_prometheus, start_operator
from tests.integration.test_reconcile import create, patch_spec, read

__all__ = ["own_prometheus"]  # the fixture, imported for this module's tests
pytestmark = pytest.mark.usefixtures("crds_installed")

SERVICE = "victims"


def engines_up(pod_engines: PodEngines, namespace: str, count: int) -> list[PodEngine]:
    def up() -> list[PodEngine] | None:
        found = pod_engines.engines(namespace, SERVICE)
        return found if len(found) == count else None

    return wait_for(up, timeout=90, what=f"{count} engines serving at their pods' IPs")


@contextmanager
def held_requests(engine: PodEngine, model: str, count: int) -> Iterator[None]:
    """`count` streamed requests running on `engine` until the block ends (then cancelled)."""
    connections = []
    body = json.dumps({"model": model, "prompt": "hold", "max_tokens": 8000, "stream": True})
    try:
        for _ in range(count):
            conn = http.client.HTTPConnection(engine.ip, engine.port, timeout=30)
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.readline()  # its first event: the request runs on this engine
            connections.append(conn)
        yield
    finally:
        for conn in connections:
            conn.close()


def pods_of(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"inferfleet.io/service={SERVICE}")
    return {p.metadata.name: p.to_dict() for p in pods.items if not p.metadata.deletion_timestamp}


def test_a_scale_down_keeps_the_busiest_replica_though_it_is_the_newest(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    own_prometheus: LocalPrometheus,
    pod_engines: PodEngines,
) -> None:
    pod_engines.prometheus = own_prometheus  # each engine is scraped with its pod's name
    pod_engines.tokens_per_second_of[(namespace, SERVICE)] = 2.0  # a held request runs for an hour
    start_operator(run_operator, namespace, own_prometheus)
    body = autoscaled(SERVICE)
    body["spec"]["scaling"] |= {"minReplicas": 2, "maxReplicas": 3, "scaleDownStabilizationSeconds": 6}
    body["spec"]["replicas"] = 2
    create(cluster, namespace, body)
    older = {e.pod for e in engines_up(pod_engines, namespace, 2)}
    patch_spec(cluster, namespace, SERVICE, {"scaling": {"minReplicas": 3}})
    engines = {e.pod: e for e in engines_up(pod_engines, namespace, 3)}
    [newest] = set(engines) - older  # the ReplicaSet's own order would remove it first
    other = sorted(older)[0]
    model = body["spec"]["model"]["name"]
    with held_requests(engines[newest], model, 2), held_requests(engines[other], model, 1):
        patch_spec(cluster, namespace, SERVICE, {"scaling": {"minReplicas": 1}})
        wait_for(lambda: len(pods_of(cluster, namespace)) == 1, timeout=120, what="a scale-down to 1 pod")
        [kept] = pods_of(cluster, namespace).values()
        assert kept["metadata"]["name"] == newest
        cost = (kept["metadata"]["annotations"] or {}).get(DELETION_COST_ANNOTATION)
        assert cost is not None
        assert int(cost) >= 1  # ranked above the pods that went
    assert read(cluster, namespace, SERVICE)["spec"]["replicas"] == 1
    assert not pod_engines.errors
