"""`inferfleet demo`: the local GPU cluster, Prometheus, the operator and the gateway, brought up together.

It installs the CRD, applies every InferenceService in examples/ and one of its own that scales
to zero (demo.services), and drives load from the shared Azure LLM traces (CC-BY 4.0, Patel et
al., ISCA 2024) through the gateway (`inferfleet gateway`, the chart's RBAC) to simulated engines
at the pods' own IPs (localcluster.pod_engines), which Prometheus scrapes with the gateway. The
operator runs with --gateway-url, so each service's status.endpoint is its URL at the gateway, and
its autoscaler reads the door's arrivals and queue. A live table (demo.view) shows what the
operator makes of it. At the end, on Ctrl-C or when --duration runs out, it writes a report
(demo.report) and tears everything down.

The operator runs with the node weights cache on (`--model-cache-root`, docs/weights.md), as the
chart runs it with `modelCache.root` set: each service's first replica on a node starts *cold*
(the node has no copy of its weights; a fetch Job runs there first), a later one on a node whose
copy is there starts *warm*. The demo applies the services, waits until the nodes of their first
replicas hold the weights, then starts the load: the autoscaled services' scale-ups land warm on
nodes their first replicas fetched to (or cold on new ones), and the service woken from zero
starts cold. The report marks each replica start warm or cold, side by side with the operator's
learned start times (demo.starts). The services' sources are the examples' own hf:// names: on
this cluster KWOK runs no container, so no fetch contacts any Hub (the report's footnote says what
that leaves out).

A cold start here includes its fetch, as on a GPU node: KWOK completes a fetch Job's pod only
after FETCH_SECONDS (LocalCluster.fetch_seconds, a stand-in for the download), and in the demo's
namespace the engines play the kubelet's part (LocalCluster and PodEngines probed_namespaces): an
engine pod's engine starts only once its node's fetch completed (its `wait-for-weights` init
container), and the pod turns Ready only when its readinessProbe passes against that engine. With
--keep neither is on (KWOK completes fetches at once and marks pods Ready on its timer), since
nothing would play the kubelet for pods created after the demo exits: such a run's report says its
cold starts did not wait for a download.

The pod IPs are local only in a private network namespace (localcluster.private_network): the
demo process enters one before it starts anything, so the cluster, Prometheus, the operator and
the gateway all run in it, and nothing outside can reach them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from inferfleet import __version__
from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.demo.door import DoorSample, read_door, read_gateway_counters
from inferfleet.demo.report import RunRecorder, ServedTotals, write_report
from inferfleet.demo.services import (
    BUSY_SECONDS,
    CYCLE_SECONDS,
    QUIET_SHARE,
    TRACE_SCALE,
    demo_body,
    load_of,
    scale_from_zero_body,
)
from inferfleet.demo.starts import FETCH_SELECTOR, StartLedger
from inferfleet.demo.view import StatusView, build_snapshot
from inferfleet.localcluster.binaries import ensure_binaries
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.crds import install_crds
from inferfleet.localcluster.gateway_identity import install_gateway_identity
from inferfleet.localcluster.gateway_process import GatewayProcess
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.paths import cache_dir, repo_root
from inferfleet.localcluster.pod_engines import PodEngines
from inferfleet.localcluster.private_network import enter_private_network
from inferfleet.localcluster.prometheus import LocalPrometheus, find_prometheus
from inferfleet.localcluster.waiting import WaitTimeoutError, wait_for
from inferfleet.planning.names import selector_string
from inferfleet.sim.load import GatewayLoad, ModelLoad
from inferfleet.sim.traces import load_arrivals, trace_rate

DEMO_NAMESPACE = "demo"
REFRESH_SECONDS = 2.0
SAMPLE_SECONDS = 5.0
GROUP_WAIT_SECONDS = 60.0
MAX_TOKENS, TOKENS_PER_SECOND = 64, 16.0
"""Each request generates 64 tokens at 16 tokens/s: 4 s on an engine, as a short chat answer."""
LOAD_GRACE_SECONDS = 30.0
"""At the end, requests still outstanding get this long to finish before they are cut."""
CACHE_ROOT = "/var/lib/inferfleet/models"
"""The weights cache's root on every node (the chart's modelCache.root). KWOK nodes have no disk:
it only names the path of the namespace's `local` volume."""
CACHE_NAMESPACE = "inferfleet-system"
"""The operator's namespace, as the chart installs it: the Jobs that make cache directories run here."""
CACHE_IMAGE = f"ghcr.io/inferfleet/inferfleet:{__version__}"
"""The chart's operator image, which the fetch Jobs and the engine pods' wait container run."""
WEIGHTS_WAIT_SECONDS = 60.0
FETCH_SECONDS = 16.0
"""How long KWOK takes to complete a fetch Job's pod: the 8B's 16 GB of bf16 weights at 1 GB/s
(8 Gbit/s from a nearby mirror), for every model alike (the 405B's 810 GB would take 13 minutes)."""


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
    custom = client.CustomObjectsApi(api)
    bodies = [
        demo_body(yaml.safe_load(path.read_text())) for path in (repo_root() / "examples").glob("*.yaml")
    ]
    bodies.sort(key=lambda body: -float(body["spec"]["model"].get("parametersBillions", 0)))
    bodies.append(scale_from_zero_body())
    for body in bodies:
        name = body["metadata"]["name"]
        custom.create_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, body)
        try:
            wait_for(partial(group_pods_bound, api, name), timeout=GROUP_WAIT_SECONDS, what=f"{name} placed")
        except WaitTimeoutError:
            _say(f"{name} is not placed after {GROUP_WAIT_SECONDS:.0f}s; going on (see its conditions)")
    return bodies


def weights_fetched(api: client.ApiClient) -> list[str]:
    """Every service with replicas has its weights Present on the nodes its pods run on (none
    Fetching or Failed); the nodes holding them, or [] while not."""
    services = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, DEMO_NAMESPACE, PLURAL
    )["items"]
    holding: list[str] = []
    for service in services:
        if int(service["spec"].get("replicas", 1)) == 0:
            continue
        weights = (service.get("status") or {}).get("weights") or []
        if not weights or any(w.get("state") != "Present" for w in weights):
            return []
        holding += [f"{service['metadata']['name']} on {w['node']}" for w in weights]
    return holding


def wait_weights_fetched(api: client.ApiClient) -> None:
    """The first replicas' cold starts done before the load: its scale-ups then find warm nodes."""
    try:
        holding = wait_for(
            partial(weights_fetched, api), timeout=WEIGHTS_WAIT_SECONDS, what="weights fetched"
        )
    except WaitTimeoutError:
        _say(f"weights not on every serving node after {WEIGHTS_WAIT_SECONDS:.0f}s; going on")
        return
    _say(f"weights fetched by {len(holding)} Jobs (cold starts): {', '.join(holding)}")


def start_load(gateway_url: str, bodies: list[dict[str, Any]]) -> GatewayLoad:
    """Every service's load through the gateway, each request naming the service's model."""
    conversation = repo_root() / "traces" / "azure-llm-2023-conv.csv"  # CC-BY 4.0, see traces/README.md
    arrivals = load_arrivals(conversation)
    trace = trace_rate(arrivals, compression=arrivals[-1] / CYCLE_SECONDS, scale=TRACE_SCALE)
    _say(
        f"load through the gateway at {gateway_url}: {conversation.name}, an hour in {CYCLE_SECONDS:.0f}s, "
        f"busy for {BUSY_SECONDS:.0f}s, then {QUIET_SHARE:.0%}, on autoscaled services; "
        "bursts on the one that scales to zero; 1 req/s on the others"
    )
    loads = {
        body["metadata"]["name"]: ModelLoad(body["spec"]["model"]["name"], load_of(body["spec"], trace))
        for body in bodies
    }
    return GatewayLoad(gateway_url, loads, max_tokens=MAX_TOKENS).start()


@dataclass
class ClusterObjects:
    """What the view and the report read, as plain dicts (the API's JSON)."""

    services: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    """The weights cache's fetch Jobs in the demo's namespace."""


def read_cluster(api: client.ApiClient) -> ClusterObjects:
    core = client.CoreV1Api(api)
    services = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, DEMO_NAMESPACE, PLURAL
    )["items"]
    nodes = api.sanitize_for_serialization(core.list_node().items)
    pods = api.sanitize_for_serialization(core.list_pod_for_all_namespaces().items)
    jobs = client.BatchV1Api(api).list_namespaced_job(DEMO_NAMESPACE, label_selector=FETCH_SELECTOR)
    return ClusterObjects(services, nodes, pods, api.sanitize_for_serialization(jobs.items))


def read_door_or_nothing(prometheus: LocalPrometheus) -> dict[str, DoorSample]:
    try:
        return read_door(prometheus.url, DEMO_NAMESPACE)
    except (OSError, ValueError) as e:
        _say(f"reading the gateway's series from Prometheus failed ({e})")
        return {}


def default_report_dir() -> Path:
    return cache_dir() / "demo" / f"report-{time.strftime('%Y%m%d-%H%M%S')}"


def watch(
    stack: DemoStack, recorder: RecorderClock, stop: threading.Event, duration_seconds: float | None
) -> None:
    """Refresh the view every REFRESH_SECONDS and sample every SAMPLE_SECONDS until stopped.

    The duration, the samples' times and the offered load all count from the load's start.
    """
    assert stack.load is not None
    api, load = stack.cluster.api_client(), stack.load
    with StatusView() as view:
        while not stop.is_set():
            elapsed = load.elapsed()
            remaining = None if duration_seconds is None else duration_seconds - elapsed
            if remaining is not None and remaining <= 0:
                break
            try:
                objects = read_cluster(api)
            except (ApiException, HTTPError) as e:
                _say(f"reading the cluster failed ({e}); retrying")
            else:
                door = read_door_or_nothing(stack.prometheus)
                snapshot = build_snapshot(
                    objects.services, objects.nodes, objects.pods, now=datetime.now(UTC),
                    elapsed_seconds=elapsed, remaining_seconds=remaining, door=door,
                )  # fmt: skip
                view.show(snapshot)
                if elapsed >= recorder.next_sample:
                    offered = {name: m.rate(elapsed) for name, m in load.loads.items()}
                    recorder.recorder.record(
                        elapsed, objects.services, objects.nodes, objects.pods, offered, door, objects.jobs
                    )
                    recorder.next_sample += SAMPLE_SECONDS
            stop.wait(timeout=REFRESH_SECONDS)


@dataclass
class RecorderClock:
    recorder: RunRecorder
    next_sample: float = 0.0


def record_served(stack: DemoStack, recorder: RunRecorder) -> None:
    """What the load sent and got, next to what the gateway counted (its /metrics, before it stops)."""
    if stack.load is None:
        return
    try:
        counted = read_gateway_counters(stack.gateway.metrics_url, DEMO_NAMESPACE)
    except (OSError, ValueError) as e:
        _say(f"could not read the gateway's counters: {e}")
        counted = None
    for name, m in stack.load.loads.items():
        ordered = sorted(m.latencies)
        history = recorder.services.get(name)
        if history is None:
            continue
        history.served = ServedTotals(
            m.sent, m.ok, m.errors, m.skipped, m.cancelled,
            p50=ordered[len(ordered) // 2] if ordered else None,
            p95=ordered[min(int(len(ordered) * 0.95), len(ordered) - 1)] if ordered else None,
            first_answer=m.first_answer,
            gateway=None if counted is None else counted.get(name),
            error_samples=tuple(m.error_samples),
        )  # fmt: skip


def observe_last_starts(stack: DemoStack, recorder: RunRecorder) -> None:
    """The starts and fetches as they stand at the end (the last sample may be seconds old)."""
    try:
        objects = read_cluster(stack.cluster.api_client())
    except (ApiException, HTTPError, OSError) as e:
        _say(f"reading the cluster at the end failed ({e}); the report has the last sample's starts")
        return
    recorder.starts.observe(objects.services, objects.pods, objects.jobs)


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


@dataclass
class DemoStack:
    """Everything the demo starts, in the order it starts them; `stop` undoes it in reverse."""

    name: str
    cluster: LocalCluster
    prometheus: LocalPrometheus
    gateway: GatewayProcess
    operator: OperatorProcess
    engines: PodEngines | None = None
    load: GatewayLoad | None = None
    workdir: Path = field(default_factory=Path)

    @classmethod
    def create(cls, name: str, *, keep: bool = False) -> DemoStack:
        """With `keep` the cluster outlives the demo's engines: KWOK decides readiness and fetches
        at once (see the module's docstring)."""
        workdir = cache_dir() / "demo" / name
        cluster = (
            LocalCluster(name=name)
            if keep
            else LocalCluster(name=name, probed_namespaces=DEMO_NAMESPACE, fetch_seconds=FETCH_SECONDS)
        )
        return cls(
            name, cluster, LocalPrometheus(workdir=workdir / "prometheus"),
            GatewayProcess(workdir / "gateway.kubeconfig", workdir / "gateway.log", [DEMO_NAMESPACE]),
            OperatorProcess(kubeconfig=cluster.kubeconfig, log_path=workdir / "operator.log"),
            workdir=workdir,
        )  # fmt: skip

    def start_cluster(self) -> client.ApiClient:
        _say("starting the local GPU cluster in a private network (pod IPs are local only there) ...")
        started = time.monotonic()
        self.cluster.create()
        _say(f"cluster up in {time.monotonic() - started:.0f}s")
        api = self.cluster.api_client()
        for line in describe_inventory(client.CoreV1Api(api)):
            _say("  " + line)
        self.prometheus.start()
        _say(f"Prometheus at {self.prometheus.url}")
        install_crds(api)  # before the operator, as `helm install` does: kopf serves kinds it finds at start
        for namespace in (DEMO_NAMESPACE, CACHE_NAMESPACE):
            client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        return api

    def start_serving(self, api: client.ApiClient) -> None:
        """The engines at pod IPs, the gateway (the chart's RBAC) and the operator pointing at it."""
        self.engines = PodEngines(
            api, tokens_per_second=TOKENS_PER_SECOND, prometheus=self.prometheus,
            probed_namespaces=self.cluster.probed_namespaces,
        ).start()  # fmt: skip
        install_gateway_identity(api, self.cluster.kubeconfig, [DEMO_NAMESPACE], self.gateway.kubeconfig)
        self.gateway.start()
        # The gateway's series carry each service's namespace and inferfleet_io_service labels,
        # as the chart's ServiceMonitor keeps them (honorLabels): the target adds only its job.
        self.prometheus.add_target("inferfleet-gateway", self.gateway.metrics_address)
        _say(f"gateway at {self.gateway.url} (namespace {DEMO_NAMESPACE}); log: {self.gateway.log_path}")
        # The local scheduler's bin-packing profile for single-pod replicas (see kube-scheduler.yaml).
        self.operator.extra_args = [
            "--prometheus-url", self.prometheus.url, "--autoscale-interval", "5",
            "--scheduler-name", "inferfleet-binpack", "--gateway-url", self.gateway.url,
            "--model-cache-root", CACHE_ROOT, "--model-cache-image", CACHE_IMAGE,
            "--model-cache-namespace", CACHE_NAMESPACE,
        ]  # fmt: skip
        self.operator.start()
        self.prometheus.add_target("inferfleet-operator", f"127.0.0.1:{self.operator.metrics_port}")
        _say(f"operator running (pid {self.operator.pid}); log: {self.operator.log_path}")

    def stop(self, keep: bool) -> None:
        if self.engines is not None:
            self.engines.stop()
        self.gateway.stop()
        self.operator.stop()
        self.prometheus.stop()
        if keep:
            pid = self.cluster.workdir / "clusters" / self.name / "pids" / "kube-apiserver.pid"
            user = "" if os.getuid() == 0 else " --user --preserve-credentials"
            _say(
                f"cluster left running in the demo's private network: enter it with "
                f"`nsenter --target $(cat {pid}) --net{user}`, then "
                f"export KUBECONFIG={self.cluster.kubeconfig}; "
                f"`inferfleet cluster down --name {self.name}` removes it"
            )
        else:
            self.cluster.delete()
            _say("cluster removed")


def run_demo(*, duration_seconds: float | None, keep: bool, name: str, report_dir: Path | None = None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    _say("building (first run only) the local cluster's binaries ...")
    ensure_binaries()  # may fetch Go modules: before the private network, which has no way out
    find_prometheus()
    enter_private_network()  # before any thread starts
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = DemoStack.create(name, keep=keep)
    recorder: RunRecorder | None = None
    try:
        api = stack.start_cluster()
        if stop.is_set():
            return 0
        stack.start_serving(api)
        bodies = apply_examples(api)
        _say(f"applied {len(bodies)} InferenceServices in namespace {DEMO_NAMESPACE}")
        wait_weights_fetched(api)
        if stop.is_set():
            return 0
        waits = stack.cluster.probed_namespaces is not None  # PodEngines plays the weights wait
        fetch_seconds = stack.cluster.fetch_seconds if waits else None
        recorder = RunRecorder(started=datetime.now(UTC), starts=StartLedger(fetch_seconds=fetch_seconds))
        stack.load = start_load(stack.gateway.url, bodies)
        _say("Ctrl-C to stop" + (f"; stopping after {duration_seconds:.0f}s" if duration_seconds else ""))
        watch(stack, RecorderClock(recorder), stop, duration_seconds)
        return 0
    finally:
        # A second Ctrl-C must not interrupt the clean-up halfway; processes started from here on
        # (kwokctl deleting the cluster) inherit the ignored SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stack.load is not None:
            _say(f"load stopped; up to {LOAD_GRACE_SECONDS:.0f}s for the requests in flight")
            stack.load.stop(grace_seconds=LOAD_GRACE_SECONDS)
        if recorder is not None:
            observe_last_starts(stack, recorder)
            record_served(stack, recorder)
            finish_report(recorder, report_dir)
        stack.stop(keep)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
