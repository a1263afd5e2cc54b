"""The demo's live table and end-of-run report, from sample objects: no cluster."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from inferfleet.demo.door import DoorSample, GatewayCounts, parse_door_result, parse_gateway_counters
from inferfleet.demo.report import ATTRIBUTION, RunRecorder, ServedTotals, summarize, write_report
from inferfleet.demo.services import demo_body
from inferfleet.demo.starts import StartLedger
from inferfleet.demo.view import GpuUsage, StatusView, build_snapshot, render_table
from inferfleet.gateway.metrics import GatewayMetrics

START = datetime(2026, 11, 22, 5, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str, zone: str, rack: str, product: str | None, gpus: int) -> dict[str, Any]:
    labels = {"topology.kubernetes.io/zone": zone, "inferfleet.io/rack": rack}
    if product:
        labels["nvidia.com/gpu.product"] = product
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96"}},
    }


NODES = [
    node("a100-a-1", "zone-a", "rack-a1", "NVIDIA-A100-SXM4-40GB", 8),
    node("a100-b-1", "zone-b", "rack-b1", "NVIDIA-A100-SXM4-40GB", 8),
    node("h100-a-1", "zone-a", "rack-a1", "NVIDIA-H100-80GB-HBM3", 8),
    node("h100-a-2", "zone-a", "rack-a1", "NVIDIA-H100-80GB-HBM3", 8),
    node("cpu-a-1", "zone-a", "rack-a1", None, 0),
]


def pod(
    name: str, service: str, node_name: str | None, gpus: int, phase: str = "Running", rank: int | None = None
) -> dict[str, Any]:
    labels = {"inferfleet.io/service": service}
    if rank is not None:  # a member of replica group 0
        labels |= {"inferfleet.io/replica": "0", "apps.kubernetes.io/pod-index": str(rank)}
    return {
        "metadata": {"name": name, "namespace": "demo", "labels": labels},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def service(
    name: str, model: str, replicas: int, status: dict[str, Any], scaling: bool = True
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": model}, "replicas": replicas}
    if scaling:
        spec["scaling"] = {"minReplicas": 1, "maxReplicas": 8}
    return {"metadata": {"name": name, "namespace": "demo"}, "spec": spec, "status": status}


def decision(t: float, frm: int, to: int, reason: str) -> dict[str, Any]:
    return {"time": at(t), "from": frm, "to": to, "reason": reason, "message": f"{frm} -> {to}"}


SMALL_PLAN = {
    "tensorParallel": 1,
    "pipelineParallel": 1,
    "gpusPerPod": 1,
    "podsPerReplica": 1,
    "layout": "1x1",
}
BIG_PLAN = {"tensorParallel": 8, "pipelineParallel": 2, "gpusPerPod": 8, "podsPerReplica": 2, "layout": "8x2"}


def small(replicas: int, ready: int, history: list[dict[str, Any]], queue: float = 0) -> dict[str, Any]:
    return service(
        "llama-8b",
        "llama-3.1-8b-instruct",
        replicas,
        {
            "phase": "Ready" if ready == replicas else "Degraded",
            "readyReplicas": ready,
            "queueDepth": queue,
            "shardPlan": SMALL_PLAN,
            "placement": [
                {"replica": 0, "domain": "zone-a", "nodes": ["a100-a-1"]},
                {"replica": 1, "domain": "zone-b", "nodes": ["a100-b-1"]},
                {"replica": 2, "domain": "zone-b", "nodes": ["a100-b-1"]},
            ][:ready],
            "scalingHistory": history,
        },
    )


def big(placement: list[dict[str, Any]], replicas: int = 1) -> dict[str, Any]:
    status = {"phase": "Ready", "readyReplicas": 1, "shardPlan": BIG_PLAN, "placement": placement}
    return service("llama-405b", "llama-3.1-405b-instruct", replicas, status, scaling=False)


PLACED_GROUP = [{"replica": 0, "domain": "rack-a1", "nodes": ["h100-a-1", "h100-a-2"]}]
SMALL_PODS = [
    pod("llama-8b-0", "llama-8b", "a100-a-1", 1),
    pod("llama-8b-1", "llama-8b", "a100-b-1", 1),
    pod("llama-8b-2", "llama-8b", "a100-b-1", 1),
    pod("llama-8b-3", "llama-8b", None, 1, phase="Pending"),  # not bound: holds no GPU
    pod("llama-8b-old", "llama-8b", "a100-a-1", 1, phase="Succeeded"),
]


def group_pods(*nodes: str | None) -> list[dict[str, Any]]:
    """Replica group 0's pods on `nodes` by rank (None: Pending), listed last rank first as the API may."""
    pods = [
        pod(f"llama-405b-g0-{rank}", "llama-405b", node, 8, "Running" if node else "Pending", rank)
        for rank, node in enumerate(nodes)
    ]
    return pods[::-1]


PODS = SMALL_PODS + group_pods("h100-a-1", "h100-a-2")


def table_text(
    services: list[dict[str, Any]],
    now: datetime = START + timedelta(seconds=100),
    door: dict[str, DoorSample] | None = None,
) -> str:
    snapshot = build_snapshot(
        services, NODES, PODS, now=now, elapsed_seconds=100, remaining_seconds=200, door=door
    )
    console = Console(file=io.StringIO(), width=220, record=True)
    console.print(render_table(snapshot))
    return console.export_text()


def row_of(text: str, name: str) -> list[str]:
    [line] = [line for line in text.splitlines() if f" {name} " in line]
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_table_shows_replicas_queue_gpus_zones_and_the_last_decision() -> None:
    history = [decision(10, 1, 4, "QueueAboveTarget"), decision(70, 4, 3, "LoadBelowCapacity")]
    door = {"llama-8b": DoorSample(queued=102.0, in_flight=128.0, arrival_rate=3.4746)}
    text = table_text([small(3, 3, history, queue=7.5), big(PLACED_GROUP)], door=door)

    _, model, layout, replicas, arrivals, door_queue, in_flight, queue, gpus, placement, phase, last = row_of(
        text, "llama-8b"
    )
    assert (model, layout, replicas, queue, gpus, phase) == (
        "llama-3.1-8b-instruct",
        "1x1 / 1 pod",
        "3/3",
        "7.5",
        "3",
        "Ready",
    )
    assert (arrivals, door_queue, in_flight) == ("3.5", "102", "128")
    assert placement == "zone-a:1 zone-b:2"
    assert last == "↓ 4→3 LoadBelowCapacity 0:30 ago"

    big_row = row_of(text, "llama-405b")
    assert big_row[2] == "8x2 / 2 pods"
    assert big_row[4:7] == ["-", "-", "-"]  # no gateway series for it (yet)
    assert big_row[7:10] == ["-", "16", "zone-a/rack-a1:1"]
    assert big_row[11] == "-"


def test_header_counts_gpus_in_use_per_product() -> None:
    snapshot = build_snapshot(
        [small(3, 3, [])], NODES, PODS, now=START, elapsed_seconds=65, remaining_seconds=235
    )
    assert snapshot.gpus == (
        GpuUsage("NVIDIA-A100-SXM4-40GB", used=3, total=16),
        GpuUsage("NVIDIA-H100-80GB-HBM3", used=16, total=16),
    )
    text = table_text([small(3, 3, [])])
    assert "elapsed 1:40, remaining 3:20" in text
    assert "NVIDIA-A100-SXM4-40GB 3/16" in text


def test_a_pipe_gets_the_table_again_only_when_more_than_clock_and_queue_changed() -> None:
    out = io.StringIO()
    view = StatusView(Console(file=out, width=200))

    def show(seconds: float, replicas: int, queue: float) -> None:
        snapshot = build_snapshot(
            [small(replicas, replicas, [], queue=queue)],
            NODES,
            PODS,
            now=START + timedelta(seconds=seconds),
            elapsed_seconds=seconds,
            remaining_seconds=None,
            door={"llama-8b": DoorSample(queue, 64.0 * replicas, seconds)},
        )
        view.show(snapshot)

    with view:
        show(0, 1, 0)
        show(2, 1, 9)  # only the clock, the queue and the door moved
        show(4, 2, 9)
    assert out.getvalue().count("LAST SCALING DECISION") == 2


def record_run() -> RunRecorder:
    """A 5-minute run: the 8B scales 1 -> 2 -> 4 and back 4 -> 3 -> 2; the 405B's group has one
    pod Pending for the first 20 s, then both bound."""
    recorder = RunRecorder(started=START)
    ups = [decision(12, 1, 2, "QueueAboveTarget"), decision(30, 2, 4, "LoadAboveCapacity")]
    downs = [decision(200, 4, 3, "LoadBelowCapacity"), decision(260, 3, 2, "LoadBelowCapacity")]
    for t in range(0, 300, 5):
        seen = [d for d in ups + downs if d["time"] <= at(t)]
        replicas = seen[-1]["to"] if seen else 1
        queue = 40.0 if 10 <= t < 40 else 0.0
        load = 55.0 if t < 120 else 8.0
        # scalingHistory keeps only the last 3 here: the recorder must still count all four.
        services = [small(replicas, replicas, seen[-3:], queue=queue), big(PLACED_GROUP)]
        group = group_pods("h100-a-1" if t >= 20 else None, "h100-a-2")
        offered = {"llama-8b": load, "llama-405b": 1.0}
        recorder.record(t, services, NODES, SMALL_PODS + group, offered)
    return recorder


# A recorded demo run's first 17 s (100 s run, every request through the gateway): the 8B at one
# replica gets the trace's busy phase, the gateway queues what its 64 slots cannot take, and the
# autoscaler goes 1 -> 5 at 6 s, before Prometheus has two scrapes of the door's arrivals
# counter. Door arrivals are rate(...[1m]): they lag the offered load for the first minute.
# (t, offered req/s, door: arrivals req/s, queued, in flight, operator's queue, desired, ready)
GATEWAY_RUN = [
    (0.0, 13.9, None, None, None, 0.0, 1, 1),
    (6.2, 46.1, 3.47, 102.0, 128.0, 0.0, 1, 1),
    (10.4, 54.6, 6.93, 0.0, 285.0, 133.0, 5, 5),
    (17.1, 48.3, 12.6, 0.0, 245.0, 0.0, 5, 5),
]
SCALE_UP_MESSAGE = "queue 133, running 64 on 1/1 replicas ready; recommend 5, scaling up to 5"


def record_gateway_run() -> RunRecorder:
    recorder = RunRecorder(started=START)
    up = {**decision(6, 1, 5, "QueueAboveTarget"), "message": SCALE_UP_MESSAGE}
    for t, offered, rate, queued, in_flight, queue, desired, ready in GATEWAY_RUN:
        services = [small(desired, ready, [up] if t >= 6 else [], queue=queue)]
        door = {} if rate is None else {"llama-8b": DoorSample(queued, in_flight, rate)}
        recorder.record(t, services, NODES, SMALL_PODS, {"llama-8b": offered}, door)
    counted = GatewayCounts(arrivals=5129, responses={"200": 5129})
    recorder.services["llama-8b"].served = ServedTotals(5129, 5129, 0, p50=3.98, p95=4.36, gateway=counted)
    return recorder


def test_summary_counts_scale_ups_and_downs_with_reasons() -> None:
    markdown = summarize(record_run(), duration_seconds=300, sample_seconds=5)
    [row] = [line for line in markdown.splitlines() if line.startswith("| llama-8b ")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells == [
        "llama-8b",
        "llama-3.1-8b-instruct",
        "1x1 / 1 pod",
        "1 to 4",
        "1 to 4",
        "-",  # no gateway series recorded: no door columns to show
        "-",
        "-",
        "2",
        "2",
        "40",
        "55.0",
    ]
    assert (
        "- **llama-8b**: 2 scale-ups (1 LoadAboveCapacity, 1 QueueAboveTarget), "
        "2 scale-downs (2 LoadBelowCapacity)"
    ) in markdown
    assert "  - at 200 s: 4 → 3 LoadBelowCapacity: 4 -> 3 [no door signals in Prometheus yet]" in markdown
    assert "- **llama-405b**: no scaling decisions" in markdown
    assert ATTRIBUTION in markdown
    assert "[report.png](report.png)" in markdown


def test_summary_says_when_and_where_each_replica_group_was_placed_whole() -> None:
    markdown = summarize(record_run(), duration_seconds=300, sample_seconds=5)
    assert (
        "- **llama-405b** (8x2 / 2 pods per replica): every replica group placed whole (1/1) from 20 s: "
        "replica 0 in rack-a1 (zone-a) on h100-a-1, h100-a-2; "
        "before that a group stood partly placed (pods bound, others Pending) for 20 s"
    ) in markdown
    assert "llama-8b** (1x1" not in markdown  # single-pod replicas are not groups


@pytest.mark.parametrize(
    ("nodes", "verdict"),
    [
        ((None, None), "replica 0: 0/2 pods bound"),
        ((None, "h100-a-2"), "replica 0: 1/2 pods bound on h100-a-2"),
    ],
    ids=["unplaced", "half-placed"],
)
def test_summary_flags_a_group_that_is_not_placed_whole(nodes: tuple[str | None, ...], verdict: str) -> None:
    recorder = RunRecorder(started=START)
    recorder.record(0, [big(PLACED_GROUP)], NODES, group_pods(*nodes), {})
    markdown = summarize(recorder, duration_seconds=5, sample_seconds=5)
    assert f"NOT every replica group placed whole at the end: 0/1; {verdict}" in markdown


def test_report_writes_a_png_and_the_markdown(tmp_path: Path) -> None:
    markdown = write_report(record_run(), tmp_path / "report", duration_seconds=300, sample_seconds=5)
    png = tmp_path / "report" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000  # two subplots of lines, not an empty canvas
    assert markdown.read_text().startswith("# inferfleet demo report")


def test_the_demo_shortens_scale_down_windows_but_not_the_example() -> None:
    example = {"spec": {"scaling": {"scaleDownStabilizationSeconds": 600}}}
    assert demo_body(example)["spec"]["scaling"]["scaleDownStabilizationSeconds"] == 120
    assert demo_body({"spec": {"scaling": {}}})["spec"]["scaling"]["scaleDownStabilizationSeconds"] == 60
    assert example["spec"]["scaling"]["scaleDownStabilizationSeconds"] == 600
    assert "scaling" not in demo_body({"spec": {}})["spec"]


def test_summary_shows_the_door_next_to_replicas_and_what_each_decision_saw_there() -> None:
    markdown = summarize(record_gateway_run(), duration_seconds=17, sample_seconds=5)
    [row] = [line for line in markdown.splitlines() if line.startswith("| llama-8b ")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    # replicas, then peak arrivals at the door, queue at the door, in flight
    assert cells[3:8] == ["1 to 5", "1 to 5", "12.6", "102", "285"]
    assert cells[10:] == ["133", "54.6"]  # the operator's queue (door + engines) and the offered load
    assert (
        "- **llama-8b**: 1 scale-up (1 QueueAboveTarget), 0 scale-downs; "
        "1 of 1 while the gateway's arrivals and queue were in Prometheus"
    ) in markdown
    assert (
        f"  - at 6 s: 1 → 5 QueueAboveTarget: {SCALE_UP_MESSAGE} "
        "[door at 6 s: 3.5 req/s arriving, 102 queued, 128 in flight]"
    ) in markdown
    assert (
        "- **llama-8b**: sent 5129, answered 5129, failed 0; latency p50 3.98 s, p95 4.36 s; "
        "the gateway counted 5129 arrivals, answered 5129 with 200"
    ) in markdown


def test_summary_tells_how_long_the_door_held_the_first_request_of_a_service_at_zero() -> None:
    recorder = RunRecorder(started=START)
    asleep = service("llama-1b", "llama-3.2-1b-instruct", 0, {"readyReplicas": 0, "shardPlan": SMALL_PLAN})
    asleep["spec"]["scaling"]["minReplicas"] = 0
    recorder.record(0, [asleep], NODES, [], {"llama-1b": 0.0})
    counted = GatewayCounts(arrivals=88, responses={"200": 88}, activations=1)
    recorder.services["llama-1b"].served = ServedTotals(88, 88, 0, first_answer=(16.2, 4.21), gateway=counted)
    markdown = summarize(recorder, duration_seconds=0, sample_seconds=5)
    assert (
        "- **llama-1b**: sent 88, answered 88, failed 0; "
        "the gateway counted 88 arrivals, answered 88 with 200, woke the service from zero 1 time; "
        "its first request (sent at 16 s) was held at the door, "
        "answered after 4.2 s"
    ) in markdown


def test_the_door_is_read_from_the_fleet_querys_gateway_series_of_the_demo_namespace() -> None:
    # Prometheus' answer to DOOR_QUERY, as recorded: one series per (service, signal).
    def series(namespace: str, service: str, signal: str, value: str) -> dict[str, Any]:
        labels = {"namespace": namespace, "inferfleet_io_service": service, "inferfleet_signal": signal}
        return {"metric": labels, "value": [1765000000.0, value]}

    result = [
        series("demo", "llama-3-1-8b", "gateway_waiting", "102"),
        series("demo", "llama-3-1-8b", "gateway_running", "128"),
        series("demo", "llama-3-1-8b", "arrival_rate", "3.4746"),
        series("demo", "llama-3-2-1b", "gateway_waiting", "0"),
        series("demo", "llama-3-2-1b", "arrival_rate", "NaN"),
        series("other", "llama-3-1-8b", "gateway_waiting", "7"),
    ]
    assert parse_door_result(result, "demo") == {
        "llama-3-1-8b": DoorSample(queued=102.0, in_flight=128.0, arrival_rate=3.4746),
        "llama-3-2-1b": DoorSample(queued=0.0, in_flight=None, arrival_rate=None),
    }


def test_the_gateways_counters_are_read_from_its_own_metrics_text() -> None:
    from prometheus_client import generate_latest

    metrics = GatewayMetrics()  # the gateway's own registry, as /metrics exposes it
    for _ in range(88):
        metrics.arrivals.labels("demo", "llama-3-2-1b").inc()
        metrics.responses.labels("demo", "llama-3-2-1b", "200").inc()
    metrics.activations.labels("demo", "llama-3-2-1b").inc()
    metrics.arrivals.labels("demo", "llama-3-1-8b").inc(3)
    metrics.responses.labels("demo", "llama-3-1-8b", "200").inc(2)
    metrics.responses.labels("demo", "llama-3-1-8b", "503").inc()
    metrics.arrivals.labels("other", "llama-3-1-8b").inc(5)
    counted = parse_gateway_counters(generate_latest(metrics.registry).decode(), "demo")
    assert counted == {
        "llama-3-1-8b": GatewayCounts(3, {"200": 2, "503": 1}, 0),
        "llama-3-2-1b": GatewayCounts(88, {"200": 88}, 1),
    }


# Replica starts, cold and warm (demo.starts): pods and fetch Jobs as the API returns them.
SOURCE_8B = "hf://meta-llama/Llama-3.1-8B-Instruct"


def engine_pod(name: str, node: str | None, created: float, ready: float | None) -> dict[str, Any]:
    body = pod(name, "llama-8b", node, 1, "Running" if ready is not None else "Pending")
    body["metadata"] |= {"uid": f"uid-{name}", "creationTimestamp": at(created)}
    if ready is not None:
        body["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": at(ready)}]
    return body


def fetch_job(
    name: str,
    node: str,
    created: float,
    completed: float | None,
    source: str = SOURCE_8B,
    failed: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {} if completed is None else {"completionTime": at(completed)}
    if failed:
        status = {"conditions": [{"type": "Failed", "status": "True"}]}
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "namespace": "demo",
            "creationTimestamp": at(created),
            "labels": {"inferfleet.io/model-cache": "fetch"},
            "annotations": {"inferfleet.io/weights-node": node, "inferfleet.io/weights-source": source},
        },
        "status": status,
    }


def cached_small(startup: dict[str, Any] | None = None) -> dict[str, Any]:
    body = small(1, 1, [])
    body["spec"]["model"]["source"] = SOURCE_8B
    if startup is not None:
        body["status"]["startup"] = startup
    return body


def start_cells(markdown: str, pod_name: str) -> list[str]:
    [row] = [line for line in markdown.splitlines() if line.startswith(f"| llama-8b | {pod_name} ")]
    return [c.strip() for c in row.split("|")[1:-1]]


# The load starts at START (t = 0); negative times are while the services were applied.
@pytest.mark.parametrize(
    ("node", "created", "ready", "jobs", "kind", "seconds", "copy"),
    [
        ("a100-a-1", 30, 32, [fetch_job("f1", "a100-a-1", -40, -37)], "warm", "2",
         "there 67 s before the pod: f1 complete at -37 s"),
        ("a100-a-1", -40, -39, [fetch_job("f1", "a100-a-1", -39, -36)], "cold", "1",
         "not there yet: f1 created at -39 s, complete at -36 s (3 s)"),
        ("a100-a-1", 20, 21, [fetch_job("f1", "a100-a-1", 20, None)], "cold", "1",
         "not there yet: f1 created at 20 s, not complete when last seen"),
        ("a100-a-1", 20, 21, [], "cold", "1", "no copy on the node and no fetch Job seen for it"),
        ("a100-b-1", 20, 22, [fetch_job("f1", "a100-a-1", -40, -37)], "cold", "2",
         "no copy on the node and no fetch Job seen for it"),
        ("a100-a-1", 20, 22, [fetch_job("f1", "a100-a-1", -40, -37, source="hf://other/model")], "cold", "2",
         "no copy on the node and no fetch Job seen for it"),
        ("a100-a-1", 20, 22, [fetch_job("f1", "a100-a-1", -40, None, failed=True)], "cold", "2",
         "no copy on the node and no fetch Job seen for it"),
        ("a100-a-1", -37, -36, [fetch_job("f1", "a100-a-1", -40, -37)], "unknown", "1",
         "f1 complete in the second the pod was created: cannot tell at the API's grain"),
        ("a100-a-1", 20, None, [fetch_job("f1", "a100-a-1", -40, -37)], "warm", "not Ready when last seen",
         "there 57 s before the pod: f1 complete at -37 s"),
        (None, 20, None, [fetch_job("f1", "a100-a-1", -40, -37)], "not placed", "not Ready when last seen",
         "the pod was never bound to a node while sampled"),
    ],
    ids=["warm", "cold-fetched-for-it", "cold-fetch-running", "cold-no-fetch", "cold-other-node",
         "cold-other-source", "cold-failed-fetch", "same-second", "warm-not-ready", "unbound"],
)  # fmt: skip
def test_each_replica_start_is_marked_warm_or_cold_from_the_fetch_jobs_and_pod_times(
    node: str | None,
    created: float,
    ready: float | None,
    jobs: list[dict[str, Any]],
    kind: str,
    seconds: str,
    copy: str,
) -> None:
    recorder = RunRecorder(started=START)
    recorder.record(0, [cached_small()], NODES, [engine_pod("p", node, created, ready)], {}, jobs=jobs)
    markdown = summarize(recorder, duration_seconds=5, sample_seconds=5)
    assert start_cells(markdown, "p") == [
        "llama-8b",
        "p",
        node or "-",
        f"{created:.0f}",
        f"**{kind}**",
        seconds,
        copy,
    ]


def test_cold_and_warm_starts_side_by_side_with_what_the_operator_learned(tmp_path: Path) -> None:
    recorder = RunRecorder(started=START)
    jobs = [fetch_job("fetch-a", "a100-a-1", -29, -27), fetch_job("fetch-b", "a100-b-1", 12, 15)]
    learned = {
        "warmSeconds": 1.0,
        "coldSeconds": 3.0,
        "samples": 4,
        "recentWarm": [1.0],
        "recentCold": [2.0, 4.0],
    }
    # Seen first Pending and unbound, then bound and Ready: one start, at the API's times.
    recorder.record(0, [cached_small()], NODES, [engine_pod("first", None, -30, None)], {}, jobs=jobs[:1])
    pods = [
        engine_pod("first", "a100-a-1", -30, -28),  # cold: its node fetched for it
        engine_pod("up-1", "a100-a-1", 8, 9),  # warm: the scale-up landed where the first fetched
        engine_pod("up-2", "a100-b-1", 11, 15),  # cold: a node new to the service
    ]
    recorder.record(15, [cached_small(learned)], NODES, pods, {}, jobs=jobs)
    markdown = summarize(recorder, duration_seconds=15, sample_seconds=5)

    [row] = [line for line in markdown.splitlines() if line.startswith("| llama-8b | 2: ")]
    assert [c.strip() for c in row.split("|")[1:-1]] == [
        "llama-8b", "2: median 3 s (2 to 4)", "1: median 1 s (1 to 1)", "3.0", "1.0", "4",
    ]  # fmt: skip
    assert [start_cells(markdown, p)[4] for p in ("first", "up-1", "up-2")] == [
        "**cold**",
        "**warm**",
        "**cold**",
    ]
    assert "KWOK plays the kubelet" in markdown
    assert "tests/unit/test_fetch_model.py" in markdown

    write_report(recorder, tmp_path, duration_seconds=15, sample_seconds=5)
    recorded = json.loads((tmp_path / "samples.json").read_text())["llama-8b"]
    assert [(s["pod"], s["node"], s["kind"], s["seconds"]) for s in recorded["starts"]] == [
        ("first", "a100-a-1", "cold", 2.0),
        ("up-1", "a100-a-1", "warm", 1.0),
        ("up-2", "a100-b-1", "cold", 4.0),
    ]
    assert recorded["starts"][1]["fetch"]["completed"] == (START - timedelta(seconds=27)).isoformat()
    assert [f["job"] for f in recorded["fetches"]] == ["fetch-a", "fetch-b"]
    assert recorded["startup"]["coldSeconds"] == 3.0


@pytest.mark.parametrize(
    ("fetch_seconds", "says", "does_not_say"),
    [
        (None, "does not wait for a download", "a stand-in for the download"),
        (16.0, "completes 16 s after it starts, a stand-in for the download (every model alike: the 8B's "
         "16 GB at 1 GB/s)", "does not wait for a download"),
        (0.0, "completes 0 s after it starts (no stand-in for a download)", "does not wait for a download"),
    ],
    ids=["kwok-at-once", "fetch-delay", "wait-without-delay"],
)  # fmt: skip
def test_the_footnote_says_whether_a_cold_start_here_waits_for_its_fetch(
    fetch_seconds: float | None, says: str, does_not_say: str, tmp_path: Path
) -> None:
    recorder = RunRecorder(started=START, starts=StartLedger(fetch_seconds=fetch_seconds))
    recorder.record(0, [cached_small()], NODES, [engine_pod("p", "a100-a-1", -20, -2)], {})
    write_report(recorder, tmp_path, duration_seconds=5, sample_seconds=5)
    markdown = (tmp_path / "report.md").read_text()
    assert says in markdown
    assert does_not_say not in markdown
    assert "tests/unit/test_fetch_model.py" in markdown
    assert json.loads((tmp_path / "samples.json").read_text())["llama-8b"]["fetch_seconds"] == fetch_seconds


def test_a_start_keeps_its_ready_time_when_the_pod_turns_unready_later() -> None:
    recorder = RunRecorder(started=START)
    recorder.record(0, [cached_small()], NODES, [engine_pod("p", "a100-a-1", -10, -8)], {})
    terminating = engine_pod("p", "a100-a-1", -10, None)
    terminating["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": at(20)}]
    recorder.record(20, [cached_small()], NODES, [terminating], {})
    markdown = summarize(recorder, duration_seconds=20, sample_seconds=5)
    assert start_cells(markdown, "p")[5] == "2"


def test_times_count_from_the_loads_start_to_the_second_without_a_negative_zero() -> None:
    recorder = RunRecorder(started=START + timedelta(seconds=0.4))  # the load starts mid-second
    jobs = [fetch_job("f1", "a100-a-1", -2, 0)]
    recorder.record(0, [cached_small()], NODES, [engine_pod("p", "a100-a-1", -3, 0)], {}, jobs=jobs)
    cells = start_cells(summarize(recorder, duration_seconds=5, sample_seconds=5), "p")
    assert cells[3] == "-3"
    assert cells[6] == "not there yet: f1 created at -2 s, complete at 0 s (2 s)"
