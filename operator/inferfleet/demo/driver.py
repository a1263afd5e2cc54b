"""`inferfleet demo`: the local GPU cluster, Prometheus and the operator, brought up together.

It installs the CRD, applies every InferenceService in examples/, drives load from the shared
Azure LLM traces (CC-BY 4.0, Patel et al., ISCA 2024) through simulated engines that Prometheus
scrapes, and shows what the operator makes of it in a live table (demo.view). At the end, on
Ctrl-C or when --duration runs out, it writes a report (demo.report) and tears everything down.
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.demo.report import RunRecorder, write_report
from inferfleet.demo.view import StatusView, build_snapshot
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.crds import install_crds
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.paths import cache_dir, repo_root
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import WaitTimeoutError, wait_for
from inferfleet.planning.names import selector_string
from inferfleet.sim.fleet import RateFn, SimulatedFleet, step_load
from inferfleet.sim.traces import load_arrivals, trace_rate

DEMO_NAMESPACE = "demo"
REFRESH_SECONDS = 2.0
SAMPLE_SECONDS = 5.0
GROUP_WAIT_SECONDS = 60.0

# The load cycle: the conversation trace's hour replayed in CYCLE_SECONDS, at full strength for
# BUSY_SECONDS, then at QUIET_SHARE of it (the lull) until the cycle repeats. A 5-minute run sees
# the fleet grow on the busy part and shrink on the quiet one.
CYCLE_SECONDS, BUSY_SECONDS, QUIET_SHARE = 300.0, 120.0, 0.15
TRACE_SCALE = 0.9
"""Busy-phase load: about 55 requests/s, 4 to 6 replicas of the 8B model at 64 concurrent requests."""
WINDOW_DIVISOR = 5
"""The demo replays an hour in 5 minutes; a scale-down stabilization window of 300 s (the 8B
example, 600 s for the 70B) would outlast the whole run, since a fleet only shrinks once the
window has passed since its last high recommendation. The demo divides the windows by this; the
files in examples/ keep their values."""


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


def demo_body(body: dict[str, Any]) -> dict[str, Any]:
    """The example as the demo applies it: scale-down windows shortened (see WINDOW_DIVISOR)."""
    body = copy.deepcopy(body)
    scaling = body["spec"].get("scaling")
    if scaling is not None:
        window = int(scaling.get("scaleDownStabilizationSeconds", 300))
        scaling["scaleDownStabilizationSeconds"] = window // WINDOW_DIVISOR
    return body


def group_pods_bound(api: client.ApiClient, name: str) -> bool:
    """The service is planned and, for a multi-node one, every pod of its replica groups is bound."""
    status = (
        client.CustomObjectsApi(api)
        .get_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, name)
        .get("status")
        or {}
    )
    plan = status.get("shardPlan")
    if not plan:
        return False
    if int(plan.get("podsPerReplica", 1)) == 1:
        return True
    pods = client.CoreV1Api(api).list_namespaced_pod(DEMO_NAMESPACE, label_selector=selector_string(name))
    bound = sum(1 for pod in pods.items if pod.spec.node_name)
    return bound >= int(plan["podsPerReplica"]) * int(status.get("replicas") or 1)


def apply_examples(api: client.ApiClient) -> list[dict[str, Any]]:
    """Biggest model first, each one's replica groups bound to nodes before the next goes in.

    The operator plans a replica group onto nodes, but a plan is not a reservation: the scheduler
    can give a planned node's GPUs to another service's pod created in between (the 70B's pod on a
    node planned for the 405B), and the group stays half-placed until GPUs free up. Applying in
    sequence keeps the demo about placement rather than that race.
    """
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": DEMO_NAMESPACE}})
    bodies = [
        demo_body(yaml.safe_load(path.read_text())) for path in (repo_root() / "examples").glob("*.yaml")
    ]
    bodies.sort(key=lambda body: -float(body["spec"]["model"].get("parametersBillions", 0)))
    for body in bodies:
        name = body["metadata"]["name"]
        custom.create_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, body)
        try:
            wait_for(partial(group_pods_bound, api, name), timeout=GROUP_WAIT_SECONDS, what=f"{name} placed")
        except WaitTimeoutError:
            _say(f"{name} is not placed after {GROUP_WAIT_SECONDS:.0f}s; going on (see its conditions)")
    return bodies


def busy_then_quiet(trace: RateFn) -> RateFn:
    def load(t: float) -> float:
        within = t % CYCLE_SECONDS
        return trace(within) * (1.0 if within < BUSY_SECONDS else QUIET_SHARE)

    return load


def start_load(
    api: client.ApiClient, prometheus: LocalPrometheus, bodies: list[dict[str, Any]]
) -> dict[str, SimulatedFleet]:
    """Autoscaled services get the trace's busy-then-quiet cycle; the others a light steady load."""
    conversation = repo_root() / "traces" / "azure-llm-2023-conv.csv"  # CC-BY 4.0, see traces/README.md
    fleets = {}
    for body in bodies:
        name, spec = body["metadata"]["name"], body["spec"]
        concurrency = int(spec["engine"].get("maxConcurrentRequests", 256))
        if spec.get("scaling"):
            arrivals = load_arrivals(conversation)
            trace = trace_rate(arrivals, compression=arrivals[-1] / CYCLE_SECONDS, scale=TRACE_SCALE)
            load = busy_then_quiet(trace)
            window = spec["scaling"]["scaleDownStabilizationSeconds"]
            _say(
                f"load on {name}: {conversation.name}, an hour in {CYCLE_SECONDS:.0f}s: busy for "
                f"{BUSY_SECONDS:.0f}s, then {QUIET_SHARE:.0%}; scale-down window {window}s for the demo"
            )
        else:
            load = step_load(1.0, 24 * 3600)
        model = spec["model"]["name"]
        fleet = SimulatedFleet(
            api, prometheus, DEMO_NAMESPACE, name, model, load, concurrency, service_seconds=4
        )
        fleets[name] = fleet.start()
    return fleets


@dataclass
class ClusterObjects:
    """What the view and the report read, as plain dicts (the API's JSON)."""

    services: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]


def read_cluster(api: client.ApiClient) -> ClusterObjects:
    core = client.CoreV1Api(api)
    services = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, DEMO_NAMESPACE, PLURAL
    )["items"]
    nodes = api.sanitize_for_serialization(core.list_node().items)
    pods = api.sanitize_for_serialization(core.list_pod_for_all_namespaces().items)
    return ClusterObjects(services, nodes, pods)


def default_report_dir() -> Path:
    return cache_dir() / "demo" / f"report-{time.strftime('%Y%m%d-%H%M%S')}"


def watch(
    api: client.ApiClient,
    fleets: dict[str, SimulatedFleet],
    recorder: RunRecorder,
    stop: threading.Event,
    duration_seconds: float | None,
    started: float,
) -> None:
    """Refresh the view every REFRESH_SECONDS and sample every SAMPLE_SECONDS until stopped.

    `started` is the monotonic time the load started: the duration, the samples' times and the
    offered load all count from it.
    """
    next_sample = started
    with StatusView() as view:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            remaining = None if duration_seconds is None else duration_seconds - elapsed
            if remaining is not None and remaining <= 0:
                break
            try:
                objects = read_cluster(api)
            except (ApiException, HTTPError) as e:
                _say(f"reading the cluster failed ({e}); retrying")
            else:
                now = datetime.now(UTC)
                view.show(
                    build_snapshot(
                        objects.services,
                        objects.nodes,
                        objects.pods,
                        now=now,
                        elapsed_seconds=elapsed,
                        remaining_seconds=remaining,
                    )
                )
                if time.monotonic() >= next_sample:
                    offered = {name: (f.load(elapsed), float(f.snapshot()[1])) for name, f in fleets.items()}
                    recorder.record(elapsed, objects.services, objects.nodes, objects.pods, offered)
                    next_sample += SAMPLE_SECONDS
            stop.wait(timeout=REFRESH_SECONDS)


def finish_report(recorder: RunRecorder, report_dir: Path | None) -> None:
    samples = [s for h in recorder.services.values() for s in h.samples]
    if not samples:
        _say("no samples taken: no report")
        return
    directory = report_dir or default_report_dir()
    try:
        markdown = write_report(
            recorder,
            directory,
            duration_seconds=max(s.t for s in samples),
            sample_seconds=SAMPLE_SECONDS,
        )
    except OSError as e:
        _say(f"could not write the report to {directory}: {e}")
        return
    _say(f"report: {markdown} and {markdown.with_name('report.png')}")


def _start_cluster(cluster: LocalCluster) -> None:
    _say("building (first run only) and starting the local GPU cluster ...")
    started = time.monotonic()
    cluster.create()
    _say(f"cluster up in {time.monotonic() - started:.0f}s; KUBECONFIG={cluster.kubeconfig}")
    for line in describe_inventory(client.CoreV1Api(cluster.api_client())):
        _say("  " + line)


def _start_operator(operator: OperatorProcess, prometheus: LocalPrometheus) -> None:
    # The local scheduler's bin-packing profile for single-pod replicas (see kube-scheduler.yaml).
    operator.extra_args = ["--prometheus-url", prometheus.url, "--autoscale-interval", "5",
                           "--scheduler-name", "inferfleet-binpack"]  # fmt: skip
    operator.start()
    prometheus.add_target("inferfleet-operator", f"127.0.0.1:{operator.metrics_port}")
    _say(f"operator running (pid {operator.pid}), liveness {operator.liveness_url}")
    _say(f"operator log: {operator.log_path}; its metrics are scraped by Prometheus too")


def run_demo(*, duration_seconds: float | None, keep: bool, name: str, report_dir: Path | None = None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    cluster = LocalCluster(name=name)
    prometheus = LocalPrometheus(workdir=cache_dir() / "demo" / "prometheus")
    operator = OperatorProcess(kubeconfig=cluster.kubeconfig, log_path=cache_dir() / "demo" / "operator.log")
    fleets: dict[str, SimulatedFleet] = {}
    recorder: RunRecorder | None = None
    try:
        _start_cluster(cluster)
        if stop.is_set():
            return 0
        prometheus.start()
        _say(f"Prometheus at {prometheus.url}")
        api = cluster.api_client()
        install_crds(api)  # before the operator, as `helm install` does: kopf serves kinds it finds at start
        _start_operator(operator, prometheus)
        if stop.is_set():
            return 0
        bodies = apply_examples(api)
        _say(f"applied {len(bodies)} examples in namespace {DEMO_NAMESPACE}")
        load_started, recorder = time.monotonic(), RunRecorder(started=datetime.now(UTC))
        fleets = start_load(api, prometheus, bodies)
        _say("Ctrl-C to stop" + (f"; stopping after {duration_seconds:.0f}s" if duration_seconds else ""))
        watch(api, fleets, recorder, stop, duration_seconds, load_started)
        return 0
    finally:
        # A second Ctrl-C must not interrupt the clean-up halfway; processes started from here on
        # (kwokctl deleting the cluster) inherit the ignored SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for fleet in fleets.values():
            fleet.stop()
        if recorder is not None:
            finish_report(recorder, report_dir)
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)
