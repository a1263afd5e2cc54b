"""The request path on the local cluster: clients -> gateway -> engines at the pods' own IPs.

The gateway runs as its own process with the chart's gateway RBAC and finds engines from the
EndpointSlices the real controller-manager writes; every Ready pod has a real HTTP engine at its
IP that answered the pod's readinessProbe (tests/podengines.py). Nothing here talks to an engine
except through the gateway.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from kubernetes import client

from inferfleet.localcluster.gateway_process import GatewayProcess
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.pod_engines import PodEngines
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.queue_queries import SERVICE_SERIES_LABEL
from tests.conftest import Cluster
from tests.integration.test_faults import api_server_ready
from tests.integration.test_groups import group_pods, service_405b
from tests.integration.test_reconcile import GROUP, PLURAL, VERSION, create, patch_spec, read, small_service
from tests.rbac import RBAC_SETTLED_AT
from tests.support import wait_for_idle_h100

pytestmark = pytest.mark.usefixtures("crds_installed")

MODEL = "llama"  # spec.model.name of the example the services are made from
TICK = 1


def served(name: str, replicas: int, slots: int = 4, **spec: Any) -> dict[str, Any]:
    body = small_service(name, product="NVIDIA-A100-SXM4-40GB")
    body["spec"]["model"]["name"] = MODEL
    body["spec"]["replicas"] = replicas
    body["spec"]["engine"]["maxConcurrentRequests"] = slots
    body["spec"].update(spec)
    return body


def ready_endpoints(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """Pods the service's EndpointSlices list as ready and not terminating."""
    slices = client.DiscoveryV1Api(cluster.api_client).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={name}"
    )
    return [
        e.target_ref.name
        for s in slices.items
        for e in s.endpoints or []
        if e.conditions and e.conditions.ready and not e.conditions.terminating
    ]


def wait_endpoints(cluster: Cluster, namespace: str, name: str, count: int, timeout: float = 90) -> None:
    """Until the service's EndpointSlices list `count` ready, non-terminating endpoints. A pod is
    Ready once its engine answered the readinessProbe (tests/podengines.py), so each one serves."""
    wait_for(
        lambda: len(ready_endpoints(cluster, namespace, name)) == count,
        timeout=timeout,
        what=f"{count} ready endpoints of {name}",
    )


def start_stack(
    run_gateway: Callable[..., GatewayProcess],
    run_operator: Callable[..., OperatorProcess],
    namespace: str,
    prometheus: LocalPrometheus | None = None,
    gateway_args: list[str] | None = None,
) -> GatewayProcess:
    gateway = run_gateway(namespaces=[namespace], extra_args=gateway_args)
    args = ["--gateway-url", gateway.url, "--autoscale-interval", str(TICK)]
    if prometheus is not None:
        prometheus.add_target(f"gateway-{namespace}", gateway.metrics_address)
        args += ["--prometheus-url", prometheus.url]
    run_operator(namespaces=[namespace], extra_args=args)
    return gateway


async def complete(session: aiohttp.ClientSession, url: str, max_tokens: int) -> tuple[int, dict[str, Any]]:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens}
    async with session.post(f"{url}/v1/completions", json=body) as response:
        return response.status, await response.json()


def test_the_gateway_wakes_a_service_at_zero_and_answers_once_a_replica_is_ready(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)  # no Prometheus: only the gateway scales
    scaling = {"minReplicas": 0, "maxReplicas": 2, "activationTimeoutSeconds": 120}
    create(cluster, namespace, served("asleep", replicas=0, scaling=scaling))
    endpoint = f"{gateway.url}/namespaces/{namespace}/services/asleep/v1"
    wait_for(lambda: read(cluster, namespace, "asleep").get("status", {}).get("endpoint") == endpoint,
             timeout=60, what="status.endpoint naming the service's URL at the gateway")  # fmt: skip
    client = openai.OpenAI(base_url=endpoint, api_key="unused", max_retries=0, timeout=150)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content == "tok0 tok1"
    assert read(cluster, namespace, "asleep")["spec"]["replicas"] == 1
    assert _gateway_metric(gateway, "inferfleet_gateway_activations_total") == 1


def test_scale_from_zero_answers_once_a_replica_is_ready_then_returns_to_zero(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
    tmp_path: Path,
) -> None:
    prometheus = LocalPrometheus(workdir=tmp_path / "prometheus")
    prometheus.start()
    try:
        # Two gateway workers: each discovers and may activate; Prometheus scrapes their summed series.
        gateway = start_stack(run_gateway, run_operator, namespace, prometheus, ["--workers", "2"])
        scaling = {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": 15,
                   "scaleDownStabilizationSeconds": 0, "activationTimeoutSeconds": 120}  # fmt: skip
        create(cluster, namespace, served("idle", replicas=0, scaling=scaling))
        endpoint = f"{gateway.url}/namespaces/{namespace}/services/idle/v1"
        wait_for(lambda: read(cluster, namespace, "idle").get("status", {}).get("endpoint") == endpoint,
                 timeout=60, what="status.endpoint naming the service's URL at the gateway")  # fmt: skip
        assert ready_endpoints(cluster, namespace, "idle") == []

        client = openai.OpenAI(base_url=endpoint, api_key="unused", max_retries=0, timeout=150)
        reply = client.completions.create(model=MODEL, prompt="wake up", max_tokens=4)
        assert reply.choices[0].text == "tok0 tok1 tok2 tok3"
        assert read(cluster, namespace, "idle")["spec"]["replicas"] == 1
        assert _gateway_metric(gateway, "inferfleet_gateway_arrivals_total") == 1  # the supervisor serves it

        def back_at_zero() -> bool:
            obj = read(cluster, namespace, "idle")
            return obj["spec"]["replicas"] == 0 and ready_endpoints(cluster, namespace, "idle") == []

        wait_for(back_at_zero, timeout=120, what="the idle service to return to zero replicas")
        history = read(cluster, namespace, "idle")["status"]["scalingHistory"]
        assert [e["reason"] for e in history][-1] == "ScaleToZero"

        # Deleted, its series leave the summed /metrics, though the workers' files cannot forget them
        assert _service_series(gateway, namespace, "idle")
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "idle")
        wait_for(lambda: not _service_series(gateway, namespace, "idle"), timeout=30,
                 what="the deleted service's series to leave the gateway's /metrics")  # fmt: skip
    finally:
        prometheus.stop()


def test_a_service_that_cannot_be_placed_is_refused_at_once_with_the_reason(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)
    body = served("nowhere", replicas=0, scaling={"minReplicas": 0, "maxReplicas": 1})
    body["spec"]["accelerator"] = {"product": "NVIDIA-B300"}  # no such node in the inventory
    create(cluster, namespace, body)
    client = openai.OpenAI(base_url=f"{gateway.url}/namespaces/{namespace}/v1", api_key="x", max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError, match="NoMatchingNodes") as refused:
        client.completions.create(model=MODEL, prompt="hello", max_tokens=4, timeout=60)
    assert refused.value.status_code == 503
    assert time.monotonic() - started < 30  # said at once, not after the 300 s activation timeout


def test_a_replica_killed_mid_load_loses_no_request(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)
    create(cluster, namespace, served("pair", replicas=2))
    wait_endpoints(cluster, namespace, "pair", 2)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            stream = await session.post(
                f"{gateway.url}/v1/completions",
                json={"model": MODEL, "prompt": "x", "max_tokens": 200, "stream": True},
            )
            assert (await stream.content.readline()).startswith(b"data: ")
            engines = {p.pod: p.engine for p in pod_engines.engines(namespace, "pair") if p.engine}
            [victim] = [pod for pod, e in engines.items() if e.counts().running == 1]  # holds the stream
            calls = [asyncio.ensure_future(complete(session, gateway.url, 100)) for _ in range(6)]
            await _until(lambda: all(e.counts().running >= 3 for e in engines.values()))
            pod_engines.kill(namespace, victim)
            answers = [await c for c in calls]
            assert [status for status, _ in answers] == [200] * 6
            assert len({body["id"] for _, body in answers}) == 6  # each answered, and once
            tail = (await stream.content.read()).decode()
            errors = [json.loads(line[6:]) for line in tail.splitlines() if line.startswith('data: {"error"')]
            assert "[DONE]" not in tail
            assert errors[-1]["error"]["code"] == "upstream_failed"

    asyncio.run(scenario())


def test_scale_down_under_load_drains_the_replica_and_fails_nothing(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)
    body = served("shrink", replicas=2)
    body["spec"]["engine"]["drainSeconds"] = 30
    create(cluster, namespace, body)
    wait_endpoints(cluster, namespace, "shrink", 2)
    engines = [p.engine for p in pod_engines.engines(namespace, "shrink") if p.engine]
    assert len(engines) == 2

    async def scenario() -> list[int]:
        statuses: list[int] = []
        async with aiohttp.ClientSession() as session:

            async def client() -> None:
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    statuses.append((await complete(session, gateway.url, 50))[0])

            load = [asyncio.ensure_future(client()) for _ in range(6)]
            await _until(lambda: all(e.counts().running >= 1 for e in engines))
            await asyncio.to_thread(patch_spec, cluster, namespace, "shrink", {"replicas": 1})
            await asyncio.gather(*load)
        return statuses

    statuses = asyncio.run(scenario())
    assert len(ready_endpoints(cluster, namespace, "shrink")) == 1
    assert statuses
    assert set(statuses) == {200}, f"{len(statuses)} requests, {statuses.count(200)} answered"
    assert [(e.counts().cancelled, e.counts().running) for e in engines] == [(0, 0), (0, 0)]  # nothing cut
    assert all(e.counts().succeeded > 0 for e in engines)


def test_queue_bound_429_and_client_disconnects_free_engine_slots_curl_too(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)
    create(cluster, namespace, served("narrow", replicas=1, slots=1, gateway={"maxQueuedRequests": 1}))
    wait_endpoints(cluster, namespace, "narrow", 1)
    [held] = pod_engines.engines(namespace, "narrow")
    engine = held.engine
    assert engine is not None
    base = f"{gateway.url}/namespaces/{namespace}/services/narrow/v1/completions"

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            running = await session.post(base, json={"prompt": "x", "max_tokens": 500, "stream": True})
            assert (await running.content.readline()).startswith(b"data: ")
            queued = asyncio.ensure_future(session.post(base, json={"prompt": "x", "max_tokens": 5}))
            await _until(lambda: _gateway_queue(gateway, namespace, "narrow") == 1)
            refused = await asyncio.to_thread(_curl, base, {"prompt": "x"})
            assert refused.splitlines()[0].split()[1] == "429"
            assert "retry-after: 1" in refused.lower()
            queued.cancel()
            running.close()
            await _until(lambda: engine.counts().running == 0 and engine.counts().waiting == 0)
            assert _gateway_queue(gateway, namespace, "narrow") == 0

    asyncio.run(scenario())
    streamed = _curl(base, {"prompt": "x", "max_tokens": 3, "stream": True})
    assert streamed.rstrip().endswith("data: [DONE]")


def _curl(url: str, body: dict[str, Any]) -> str:
    args = ["curl", "-sS", "-N", "-i", "-H", "Content-Type: application/json", "-d", json.dumps(body), url]
    return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout


def _metrics_lines(gateway: GatewayProcess) -> list[str]:
    """The lines of the gateway's /metrics."""
    with urllib.request.urlopen(gateway.metrics_url, timeout=5) as r:
        return r.read().decode().splitlines()


def _gateway_queue(gateway: GatewayProcess, namespace: str, service: str) -> float:
    labels = (f'inferfleet_io_service="{service}"', f'namespace="{namespace}"')
    for line in _metrics_lines(gateway):
        if line.startswith("inferfleet_gateway_queued_requests{") and all(x in line for x in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_a_thousand_concurrent_streams_through_one_gateway(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)
    create(cluster, namespace, served("wide", replicas=4, slots=256))
    wait_endpoints(cluster, namespace, "wide", 4)

    async def one(session: aiohttp.ClientSession) -> int:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 10, "stream": True}
        async with session.post(f"{gateway.url}/v1/completions", json=body) as response:
            text = (await response.read()).decode()
            return text.count("data: {") if text.rstrip().endswith("data: [DONE]") else -1

    async def scenario() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            return await asyncio.gather(*(one(session) for _ in range(1000)))

    started = time.monotonic()
    chunks = asyncio.run(scenario())
    assert chunks == [10] * 1000  # every stream whole: ten tokens, then [DONE]
    assert time.monotonic() - started < 120


def test_sigterm_lets_requests_in_flight_finish(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    gateway = start_stack(run_gateway, run_operator, namespace)
    create(cluster, namespace, served("steady", replicas=1))
    wait_endpoints(cluster, namespace, "steady", 1)
    [held] = pod_engines.engines(namespace, "steady")
    assert held.engine is not None

    async def scenario() -> tuple[list[int], str, int | None]:
        async with aiohttp.ClientSession() as session:
            stream = await session.post(
                f"{gateway.url}/v1/completions",
                json={"model": MODEL, "prompt": "x", "max_tokens": 100, "stream": True},
            )
            calls = [asyncio.ensure_future(complete(session, gateway.url, 100)) for _ in range(3)]
            await _until(lambda: held.engine is not None and held.engine.counts().running == 4)
            code = await asyncio.to_thread(gateway.stop)  # SIGTERM: a rollout or a node drain
            statuses = [status for status, _ in await asyncio.gather(*calls)]
            return statuses, (await stream.read()).decode(), code

    statuses, streamed, code = asyncio.run(scenario())
    assert statuses == [200, 200, 200]
    assert streamed.rstrip().endswith("data: [DONE]")
    assert code == 0


def test_the_gateway_serves_through_an_api_server_restart_and_follows_changes_after(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
    request: pytest.FixtureRequest,
) -> None:
    if cluster.local is None:
        pytest.skip("restarts the local cluster's API server; not on a cluster given by kubeconfig")
    gateway = start_stack(run_gateway, run_operator, namespace)
    create(cluster, namespace, served("calm", replicas=2))
    wait_endpoints(cluster, namespace, "calm", 2)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60)

    cluster.local.stop()  # etcd and every control-plane component
    try:
        reply = client.completions.create(model=MODEL, prompt="still there?", max_tokens=2)
        assert reply.choices[0].text == "tok0 tok1"  # served from the gateway's cache
    finally:
        cluster.local.start()
    wait_for(lambda: api_server_ready(cluster), timeout=120, what="the API server's /readyz")
    request.node.stash[RBAC_SETTLED_AT] = datetime.now()  # 403s before this are the authorizer's cold cache

    # A change after the restart: one replica goes. (Not one added: a restarted kwok forgets which
    # pod IPs it handed out and may give a new pod one that is in use.)
    patch_spec(cluster, namespace, "calm", {"replicas": 1})
    wait_endpoints(cluster, namespace, "calm", 1, timeout=120)
    wait_for(lambda: not pod_engines.stopping(namespace, "calm"), timeout=120, what="the removed engine gone")
    retries_before = _gateway_retries(gateway)

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as session:
            return [
                s for s, _ in await asyncio.gather(*(complete(session, gateway.url, 20) for _ in range(8)))
            ]

    assert asyncio.run(burst()) == [200] * 8
    assert _gateway_retries(gateway) == retries_before  # nothing was sent to the replica that left

    # The restarted kwok may hand this test's pod IPs to later tests' pods: they go before it ends
    # (the namespace's deletion alone would leave them to outlive it; two engines on one IP).
    patch_spec(cluster, namespace, "calm", {"replicas": 0})
    wait_for(
        lambda: (
            not cluster.core.list_namespaced_pod(namespace).items
            and not pod_engines.stopping(namespace, "calm")
        ),
        timeout=120,
        what="the service's pods gone",
    )


def _gateway_retries(gateway: GatewayProcess) -> float:
    return _gateway_metric(gateway, "inferfleet_gateway_retries_total")


def _service_series(gateway: GatewayProcess, namespace: str, service: str) -> list[str]:
    """The gateway's /metrics lines of one service."""
    labels = f'{SERVICE_SERIES_LABEL}="{service}",namespace="{namespace}"'
    return [line for line in _metrics_lines(gateway) if not line.startswith("#") and labels in line]


def _gateway_metric(gateway: GatewayProcess, name: str) -> float:
    """The sum of a metric's series on the gateway's /metrics."""
    series = (line for line in _metrics_lines(gateway) if line.startswith(name + "{"))
    return sum(float(line.rsplit(" ", 1)[1]) for line in series)


def test_a_multi_node_replica_is_reached_through_its_group_leader_only(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    run_gateway: Callable[..., GatewayProcess],
    pod_engines: PodEngines,
) -> None:
    wait_for_idle_h100(cluster.core, cluster.apps)
    gateway = run_gateway(namespaces=[namespace])
    run_operator(extra_args=["--gateway-url", gateway.url])  # cluster-wide: placement counts every GPU
    create(cluster, namespace, service_405b("big"))
    wait_endpoints(cluster, namespace, "big", 1, timeout=180)
    pods = {p.metadata.name: p for p in group_pods(cluster, namespace, "big")}
    assert len(pods) == 2  # one replica: a leader and a worker on two nodes
    [leader] = ready_endpoints(cluster, namespace, "big")
    assert pods[leader].metadata.labels["apps.kubernetes.io/pod-index"] == "0"

    model = read(cluster, namespace, "big")["spec"]["model"]["name"]
    # KWOK can make the pods Ready before the operator's first status write lands.
    endpoint = wait_for(lambda: read(cluster, namespace, "big").get("status", {}).get("endpoint"),
                        timeout=60, what="status.endpoint of big")  # fmt: skip
    client = openai.OpenAI(base_url=endpoint, api_key="x", max_retries=0)
    assert (
        client.completions.create(model=model, prompt="hi", max_tokens=3).choices[0].text == "tok0 tok1 tok2"
    )
    [engine] = pod_engines.engines(namespace, "big")
    assert engine.pod == leader
    assert engine.engine is not None
    assert engine.engine.counts().succeeded == 1
