"""`inferfleet demo`: the local GPU cluster, Prometheus and the operator, brought up together.

It installs the CRD, applies every InferenceService in examples/, drives load from the shared
Azure LLM traces (CC-BY 4.0, Patel et al., ISCA 2024) through simulated engines that Prometheus
scrapes, and shows what the operator makes of it: placement, replicas, queue and decisions.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from types import FrameType
from typing import Any

import yaml
from kubernetes import client

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.crds import install_crds
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.paths import cache_dir, repo_root
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.sim.fleet import SimulatedFleet, step_load
from inferfleet.sim.traces import load_arrivals, trace_rate

DEMO_NAMESPACE = "demo"


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def describe_inventory(api: client.CoreV1Api) -> list[str]:
    by_zone_product: Counter[tuple[str, str]] = Counter()
    gpus: Counter[tuple[str, str]] = Counter()
    for node in api.list_node().items:
        labels = node.metadata.labels or {}
        key = (
            labels.get("topology.kubernetes.io/zone", "?"),
            labels.get("nvidia.com/gpu.product", "cpu-only"),
        )
        by_zone_product[key] += 1
        gpus[key] += int((node.status.allocatable or {}).get("nvidia.com/gpu", "0"))
    return [
        f"{zone:8} {product:24} nodes={n:2} gpus={gpus[(zone, product)]:3}"
        for (zone, product), n in sorted(by_zone_product.items())
    ]


def apply_examples(api: client.ApiClient) -> list[dict[str, Any]]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": DEMO_NAMESPACE}})
    bodies = []
    for path in sorted((repo_root() / "examples").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        custom.create_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, body)
        bodies.append(body)
    return bodies


def describe_services(api: client.ApiClient) -> list[str]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, DEMO_NAMESPACE, PLURAL
    )["items"]
    lines = [
        f"{'SERVICE':16} {'PHASE':10} {'READY':>5} {'TPxPP':>6} {'GPUs':>5} {'QUEUE':>6}  WHY / LAST DECISION"
    ]
    for item in items:
        status = item.get("status") or {}
        plan = status.get("shardPlan") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        gpus = (plan.get("totalGpus") or 0) * (status.get("replicas") or 0)
        replicas = f"{status.get('readyReplicas', 0)}/{item['spec'].get('replicas', 1)}"
        history = status.get("scalingHistory") or []
        why = f"{ready.get('reason', '')}: {ready.get('message', '')}"
        if history:
            last = history[-1]
            why += f" | {last['from']}->{last['to']} {last['reason']}"
        queue = status.get("queueDepth")
        lines.append(
            f"{item['metadata']['name']:16} {status.get('phase', '-'):10} {replicas:>5} "
            f"{plan.get('layout', '-'):>6} {gpus:>5} {'-' if queue is None else queue:>6}  {why}"
        )
    return lines


def start_load(
    api: client.ApiClient, prometheus: LocalPrometheus, bodies: list[dict[str, Any]]
) -> list[SimulatedFleet]:
    """Autoscaled services replay the conversation trace 20x faster; the others get a light steady load."""
    conversation = repo_root().parent / "shared" / "traces" / "azure-llm-2023-conv.csv"
    fleets = []
    for body in bodies:
        name, spec = body["metadata"]["name"], body["spec"]
        concurrency = int(spec["engine"].get("maxConcurrentRequests", 256))
        if spec.get("scaling") and conversation.exists():
            load = trace_rate(load_arrivals(conversation), compression=20, scale=0.5)
            _say(f"load on {name}: {conversation.name} replayed 20x faster (an hour in 3 minutes)")
        else:
            load = step_load(1.0, 24 * 3600)
        model = spec["model"]["name"]
        fleet = SimulatedFleet(
            api, prometheus, DEMO_NAMESPACE, name, model, load, concurrency, service_seconds=4
        )
        fleets.append(fleet.start())
    return fleets


def run_demo(*, duration_seconds: float | None, keep: bool, name: str) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    cluster = LocalCluster(name=name)
    prometheus = LocalPrometheus(workdir=cache_dir() / "demo" / "prometheus")
    operator = OperatorProcess(kubeconfig=cluster.kubeconfig, log_path=cache_dir() / "demo" / "operator.log")
    fleets: list[SimulatedFleet] = []
    try:
        _say("building (first run only) and starting the local GPU cluster ...")
        started = time.monotonic()
        cluster.create()
        _say(f"cluster up in {time.monotonic() - started:.0f}s; KUBECONFIG={cluster.kubeconfig}")
        for line in describe_inventory(client.CoreV1Api(cluster.api_client())):
            _say("  " + line)
        prometheus.start()
        _say(f"Prometheus at {prometheus.url}")
        api = cluster.api_client()
        install_crds(api)  # before the operator, as `helm install` does: kopf serves kinds it finds at start
        operator.extra_args = ["--prometheus-url", prometheus.url, "--autoscale-interval", "5"]
        operator.start()
        _say(f"operator running (pid {operator.pid}), liveness {operator.liveness_url}")
        _say(f"operator log: {operator.log_path}")
        bodies = apply_examples(api)
        _say(f"applied {len(bodies)} examples in namespace {DEMO_NAMESPACE}")
        fleets = start_load(api, prometheus, bodies)
        _say("Ctrl-C to stop" + (f"; stopping after {duration_seconds:.0f}s" if duration_seconds else ""))
        deadline = time.monotonic() + duration_seconds if duration_seconds else None
        shown: list[str] = []
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            lines = describe_services(api)
            if lines != shown:
                for line in lines:
                    _say("  " + line)
                shown = lines
            stop.wait(timeout=2)
        return 0
    finally:
        for fleet in fleets:
            fleet.stop()
        operator.stop()
        prometheus.stop()
        if keep:
            _say(
                f"cluster left running: export KUBECONFIG={cluster.kubeconfig}; "
                f"`inferfleet cluster down --name {name}` removes it"
            )
        else:
            cluster.delete()
            _say("cluster removed")
