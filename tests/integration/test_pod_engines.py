"""Real engines behind KWOK pods: found through EndpointSlices, reached over HTTP at the pods' IPs.

The session runs in a private network where the pod range is local (tests/podengines.py).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from inferfleet.localcluster.cluster import DEFAULT_POD_CIDR
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.pod_engines import PodEngines
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster

pytestmark = pytest.mark.usefixtures("crds_installed")

EXAMPLE = Path(__file__).parents[2] / "examples" / "llama-3.1-8b-vllm.yaml"
GROUP, VERSION, PLURAL = "inferfleet.io", "v1alpha1", "inferenceservices"
TOKENS_PER_SECOND = 20.0
HELD_TOKENS = 400
"""20 s of generation: far longer than the scale-down takes to reach the EndpointSlice."""

Endpoint = tuple[str, bool, bool, bool]
"""(address, ready, serving, terminating) as the EndpointSlice lists it."""


def service_body(name: str, replicas: int) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name}
    body["spec"]["accelerator"] = {"product": "NVIDIA-L4"}
    body["spec"]["engine"].update(maxConcurrentRequests=4, drainSeconds=60)
    body["spec"]["replicas"] = replicas
    return body


def slice_endpoints(cluster: Cluster, namespace: str, service: str) -> list[Endpoint]:
    slices = client.DiscoveryV1Api(cluster.api_client).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        (address, bool(e.conditions.ready), bool(e.conditions.serving), bool(e.conditions.terminating))
        for s in slices.items
        for e in s.endpoints or []
        for address in e.addresses
    )


def complete(address: str, port: int, model: str, max_tokens: int) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(address, port, timeout=120)
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": max_tokens})
    try:
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def running_operator(run_operator: Callable[..., OperatorProcess], namespace: str) -> OperatorProcess:
    return run_operator(namespaces=[namespace])


def test_each_pod_in_the_endpointslice_serves_its_model_and_a_removed_one_drains(
    cluster: Cluster, namespace: str, running_operator: OperatorProcess, pod_engines: PodEngines
) -> None:
    name, model = "llama", "llama-3.1-8b-instruct"
    pod_engines.tokens_per_second_of[(namespace, name)] = TOKENS_PER_SECOND
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, service_body(name, 2))

    def two_ready() -> list[Endpoint]:
        endpoints = slice_endpoints(cluster, namespace, name)
        assert [ready for _, ready, _, _ in endpoints] == [True, True], endpoints
        return endpoints

    endpoints = wait_for(two_ready, timeout=90, what="2 ready endpoints in the service's EndpointSlice")
    pod_range = ipaddress.ip_network(DEFAULT_POD_CIDR)
    assert all(ipaddress.ip_address(address) in pod_range for address, *_ in endpoints), endpoints
    for address, *_ in endpoints:
        status, reply = complete(address, 8000, model, max_tokens=4)
        assert (status, reply["model"], reply["choices"][0]["finish_reason"]) == (200, model, "length")

    with ThreadPoolExecutor(max_workers=2) as pool:
        held: dict[str, Future[tuple[int, dict[str, Any]]]] = {
            address: pool.submit(complete, address, 8000, model, HELD_TOKENS) for address, *_ in endpoints
        }
        wait_for(
            lambda: all(
                e.engine and e.engine.counts().running == 1 for e in pod_engines.engines(namespace, name)
            ),
            timeout=30,
            what="each engine to run its held request",
        )
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": 1}}
        )

        def one_terminating() -> str:
            now = slice_endpoints(cluster, namespace, name)
            terminating = [address for address, ready, serving, term in now if term and serving and not ready]
            assert (len(now), len(terminating)) == (2, 1), now
            return terminating[0]

        removed = wait_for(one_terminating, timeout=60, what="the removed pod's endpoint to turn terminating")
        assert not held[removed].done(), "the held request ended before its pod was removed"
        status, reply = held[removed].result(timeout=60)
        assert (status, reply["usage"]["completion_tokens"]) == (200, HELD_TOKENS)

        def only_the_survivor() -> list[Endpoint]:
            now = slice_endpoints(cluster, namespace, name)
            assert [address for address, *_ in now] == [a for a, *_ in endpoints if a != removed], now
            return now

        survivor = wait_for(
            only_the_survivor, timeout=30, what="the drained pod's endpoint to leave the slice"
        )
        assert survivor[0][1:] == (True, True, False)
        assert held[survivor[0][0]].result(timeout=60)[0] == 200
    assert pod_engines.errors == []


def test_a_killed_replica_resets_its_request_and_its_replacement_serves(
    cluster: Cluster, namespace: str, running_operator: OperatorProcess, pod_engines: PodEngines
) -> None:
    name, model = "llama", "llama-3.1-8b-instruct"
    pod_engines.tokens_per_second_of[(namespace, name)] = TOKENS_PER_SECOND
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, service_body(name, 1))
    first = wait_for(
        lambda: pod_engines.engines(namespace, name), timeout=90, what="an engine for the service's pod"
    )[0]
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(complete, first.ip, first.port, model, HELD_TOKENS)
        wait_for(
            lambda: first.engine and first.engine.counts().running == 1, timeout=30, what="the held request"
        )
        pod_engines.kill(namespace, first.pod)
        with pytest.raises(ConnectionError):  # reset, not an answer: the process died
            held.result(timeout=30)
    assert first.pod not in {p.metadata.name for p in cluster.core.list_namespaced_pod(namespace).items}

    def replacement_ready() -> tuple[str, int]:
        engines = pod_engines.engines(namespace, name)
        assert [e.pod != first.pod for e in engines] == [True], engines
        assert (engines[0].ip, True, True, False) in slice_endpoints(cluster, namespace, name)
        return engines[0].ip, engines[0].port

    address, port = wait_for(replacement_ready, timeout=60, what="the replacement pod's engine in the slice")
    status, reply = complete(address, port, model, max_tokens=4)
    assert (status, reply["model"]) == (200, model)
    assert pod_engines.errors == []
