"""The demo's end-of-run report: what the load did and what the operator made of it.

While the demo runs, `RunRecorder.record` samples every service (offered load, the gateway's
arrival rate, queue and requests in flight, the operator's queue, desired and ready replicas) and
collects every scaling decision seen in status.scalingHistory (which keeps only the last few). At
the end the driver adds what the load sent and the gateway counted (`ServedTotals`), and
`write_report` writes report.md (`summarize`, pure) and report.png (`plot`, matplotlib's Agg
backend) to the report directory.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from inferfleet.demo.door import DoorSample, GatewayCounts
from inferfleet.demo.starts import StartLedger, start_lines, starts_json
from inferfleet.demo.view import NO_DOOR, layout_of, node_labels, parse_time
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL, SHARD_RANK_LABEL, ZONE_LABEL

ATTRIBUTION = "Load: Azure LLM inference traces 2023 (CC-BY 4.0, Patel et al., ISCA 2024)"
PNG_NAME, MARKDOWN_NAME, SAMPLES_NAME = "report.png", "report.md", "samples.json"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


@dataclass(frozen=True)
class Sample:
    t: float
    """Seconds since the load started."""
    load_rps: float
    """Offered: the rate the load generator aimed at."""
    queue: float
    """status.queueDepth: waiting at the door and on engines, as the operator last saw it."""
    desired: int
    ready: int
    door: DoorSample = NO_DOOR
    """The gateway's arrival rate, queue and requests on engines (Prometheus), as the autoscaler saw them."""
    groups_whole: int = 0
    """Multi-node services: replica groups with every pod bound to a node."""
    groups_partial: int = 0
    """...and groups with some pods bound and others not (what gang placement must never leave)."""


@dataclass(frozen=True)
class Decision:
    t: float
    from_replicas: int
    to_replicas: int
    reason: str
    message: str = ""

    @property
    def is_up(self) -> bool:
        return self.to_replicas > self.from_replicas


@dataclass(frozen=True)
class ServedTotals:
    """One service's requests over the run: as the load generator sent them, as the gateway counted."""

    sent: int
    ok: int
    errors: int
    skipped: int = 0
    cancelled: int = 0
    p50: float | None = None
    p95: float | None = None
    first_answer: tuple[float, float] | None = None
    """(sent at, seconds to answer) of the first request answered."""
    gateway: GatewayCounts | None = None
    """None: the gateway's /metrics could not be read at the end."""
    error_samples: tuple[str, ...] = ()


@dataclass
class ServiceHistory:
    name: str
    model: str = "-"
    layout: str = "-"
    pods_per_replica: int = 1
    samples: list[Sample] = field(default_factory=list)
    decisions: dict[tuple[str, int, int], Decision] = field(default_factory=dict)
    """Keyed by (time, from, to) as in scalingHistory, so a decision seen twice counts once."""
    placement: list[dict[str, Any]] = field(default_factory=list)
    """The last status.placement seen."""
    bound_nodes: dict[int, list[str | None]] = field(default_factory=dict)
    """Replica -> the node of each of its pods by shard rank (None: not bound), as last seen."""
    min_replicas: int | None = None
    """spec.scaling.minReplicas; None: not autoscaled."""
    served: ServedTotals | None = None

    def ordered_decisions(self) -> list[Decision]:
        return sorted(self.decisions.values(), key=lambda d: d.t)

    def sample_near(self, t: float) -> Sample | None:
        """The sample closest in time to `t` (a decision's time, to the second)."""
        return min(self.samples, key=lambda s: abs(s.t - t), default=None)


@dataclass
class RunRecorder:
    started: datetime
    """Wall-clock time the load started (timezone-aware): decision times are measured from it."""
    services: dict[str, ServiceHistory] = field(default_factory=dict)
    node_zones: dict[str, str] = field(default_factory=dict)
    starts: StartLedger = field(default_factory=StartLedger)
    """Every engine pod's start and every fetch Job seen (demo.starts): cold and warm starts."""

    def record(
        self,
        t: float,
        services: Iterable[Mapping[str, Any]],
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        offered: Mapping[str, float],
        door: Mapping[str, DoorSample] | None = None,
        jobs: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """One sample per service at `t`; `offered` maps a service to the requests/s the load aimed
        at, `door` to the gateway's signals (demo.door.read_door), `jobs` are the weights cache's
        fetch Jobs (demo.starts.FETCH_SELECTOR)."""
        services, pods = list(services), list(pods)
        self.starts.observe(services, pods, jobs)
        self.node_zones.update({n: labels.get(ZONE_LABEL, "?") for n, labels in node_labels(nodes).items()})
        for service in services:
            name, spec, status = (
                service["metadata"]["name"],
                service.get("spec") or {},
                service.get("status") or {},
            )
            history = self.services.setdefault(name, ServiceHistory(name))
            plan = status.get("shardPlan") or {}
            history.model = (spec.get("model") or {}).get("name", history.model)
            if plan:
                history.layout = layout_of(plan)
                history.pods_per_replica = int(plan.get("podsPerReplica") or 1)
            history.placement = list(status.get("placement") or [])
            scaling = spec.get("scaling")
            history.min_replicas = None if scaling is None else int(scaling.get("minReplicas", 1))
            load, queue = offered.get(name, 0.0), float(status.get("queueDepth") or 0)
            desired, ready = int(spec.get("replicas", 1)), int(status.get("readyReplicas") or 0)
            whole = partial = 0
            if history.pods_per_replica > 1:
                history.bound_nodes = bound_nodes(pods, service["metadata"].get("namespace", ""), name)
                for group in history.bound_nodes.values():
                    bound = sum(n is not None for n in group)
                    whole += bound == history.pods_per_replica
                    partial += 0 < bound < history.pods_per_replica
            door_now = (door or {}).get(name, NO_DOOR)
            history.samples.append(Sample(t, load, queue, desired, ready, door_now, whole, partial))
            for entry in status.get("scalingHistory") or []:
                key = (str(entry.get("time")), int(entry["from"]), int(entry["to"]))
                if key not in history.decisions:
                    at = parse_time(entry.get("time"))
                    since = (at - self.started).total_seconds() if at else t
                    reason, message = str(entry.get("reason", "")), str(entry.get("message") or "")
                    history.decisions[key] = Decision(since, key[1], key[2], reason, message)


def bound_nodes(
    pods: Iterable[Mapping[str, Any]], namespace: str, service: str
) -> dict[int, list[str | None]]:
    """Replica -> node of each of its pods (None: not bound), by shard rank, from the pods' labels."""
    by_replica: dict[int, list[tuple[int, str, str | None]]] = {}
    for pod in pods:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if meta.get("namespace") != namespace or labels.get(SERVICE_LABEL) != service:
            continue
        if REPLICA_LABEL in labels:
            # Group pods are StatefulSet pods: their index is their rank.
            rank = int(labels.get(SHARD_RANK_LABEL) or labels.get(POD_INDEX_LABEL) or 0)
            member = (rank, meta["name"], (pod.get("spec") or {}).get("nodeName"))
            by_replica.setdefault(int(labels[REPLICA_LABEL]), []).append(member)
    return {r: [node for _, _, node in sorted(members)] for r, members in sorted(by_replica.items())}


def _reasons(decisions: Sequence[Decision]) -> str:
    counts = Counter(d.reason for d in decisions)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def _range(values: Sequence[int]) -> str:
    return f"{min(values)} to {max(values)}" if values else "-"


def _seconds_partly_placed(samples: Sequence[Sample]) -> float:
    return sum(b.t - a.t for a, b in pairwise(samples) if a.groups_partial)


def group_placement(history: ServiceHistory, node_zones: Mapping[str, str]) -> str:
    """Whether every replica group of a multi-node service ended up placed whole (all its pods bound
    to nodes), since when, where, and how long a group stood partly placed before."""
    if not history.samples:
        return "never sampled"
    desired = history.samples[-1].desired
    domains = {int(p["replica"]): str(p.get("domain") or "?") for p in history.placement}
    whole = {
        r: [n for n in nodes if n]
        for r, nodes in history.bound_nodes.items()
        if len(nodes) == history.pods_per_replica and all(nodes)
    }
    missing = [r for r in range(desired) if r not in whole]

    def where(r: int, nodes: list[str]) -> str:
        zones = ", ".join(sorted({node_zones.get(n, "?") for n in nodes}))
        return f"replica {r} in {domains.get(r, '?')} ({zones}) on {', '.join(nodes)}"

    partly = _seconds_partly_placed(history.samples)
    before = f"; before that a group stood partly placed (pods bound, others Pending) for {partly:.0f} s"
    if missing:
        details = []
        for r in missing:
            nodes = history.bound_nodes.get(r, [])
            bound = [n for n in nodes if n]
            on = f" on {', '.join(bound)}" if bound else ""
            details.append(f"replica {r}: {len(bound)}/{history.pods_per_replica} pods bound{on}")
        return (
            f"NOT every replica group placed whole at the end: {desired - len(missing)}/{desired}; "
            + "; ".join(details)
        )
    last_gap = max((x.t for x in history.samples if x.groups_whole < x.desired), default=None)
    since = min(x.t for x in history.samples if last_gap is None or x.t > last_gap)
    placed = "; ".join(where(r, whole[r]) for r in sorted(whole) if r < desired) or "no replica desired"
    return f"every replica group placed whole ({desired}/{desired}) from {since:.0f} s: {placed}" + (
        before if partly else ""
    )


def _peak(values: Iterable[float | None], digits: int = 0) -> str:
    present = [v for v in values if v is not None]
    return f"{max(present):.{digits}f}" if present else "-"


TABLE_HEAD = [
    "| service | model | layout | desired replicas | ready replicas | peak arrivals at the door (req/s) "
    "| peak queue at the door | peak in flight | scale-ups | scale-downs | peak queue (operator) "
    "| peak offered load (req/s) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _table_row(h: ServiceHistory) -> str:
    decisions = h.ordered_decisions()
    up_count = sum(d.is_up for d in decisions)
    doors = [s.door for s in h.samples]
    return (
        f"| {h.name} | {h.model} | {h.layout} | {_range([s.desired for s in h.samples])} "
        f"| {_range([s.ready for s in h.samples])} | {_peak((d.arrival_rate for d in doors), 1)} "
        f"| {_peak(d.queued for d in doors)} | {_peak(d.in_flight for d in doors)} "
        f"| {up_count} | {len(decisions) - up_count} "
        f"| {max((s.queue for s in h.samples), default=0):g} "
        f"| {max((s.load_rps for s in h.samples), default=0):.1f} |"
    )


def _with_door(sample: Sample | None) -> bool:
    return sample is not None and sample.door.arrival_rate is not None


def _door_text(sample: Sample | None) -> str:
    if sample is None or sample.door.arrival_rate is None:
        return "no door signals in Prometheus yet"
    door = sample.door
    return (
        f"door at {sample.t:.0f} s: {door.arrival_rate:.1f} req/s arriving, {_peak([door.queued])} queued, "
        f"{_peak([door.in_flight])} in flight"
    )


def _decision_lines(h: ServiceHistory) -> list[str]:
    decisions = h.ordered_decisions()
    if not decisions:
        return [f"- **{h.name}**: no scaling decisions"]
    ups = [d for d in decisions if d.is_up]
    downs = [d for d in decisions if not d.is_up]
    summary = f"{len(ups)} scale-up{'s' * (len(ups) != 1)}" + (f" ({_reasons(ups)})" if ups else "")
    summary += f", {len(downs)} scale-down{'s' * (len(downs) != 1)}" + (
        f" ({_reasons(downs)})" if downs else ""
    )
    with_door = sum(_with_door(h.sample_near(d.t)) for d in decisions)
    summary += f"; {with_door} of {len(decisions)} while the gateway's arrivals and queue were in Prometheus"
    return [f"- **{h.name}**: {summary}"] + [
        f"  - at {d.t:.0f} s: {d.from_replicas} → {d.to_replicas} {d.reason}"
        + (f": {d.message}" if d.message else "")
        + f" [{_door_text(h.sample_near(d.t))}]"
        for d in decisions
    ]


def _served_line(h: ServiceHistory) -> str:
    served = h.served
    if served is None:
        return f"- **{h.name}**: no load"
    line = (
        f"- **{h.name}**: sent {served.sent}, answered {served.ok}, failed {served.errors}"
        + (f", skipped {served.skipped}" if served.skipped else "")
        + (f", cut at the end {served.cancelled}" if served.cancelled else "")
    )
    if served.p50 is not None and served.p95 is not None:
        line += f"; latency p50 {served.p50:.2f} s, p95 {served.p95:.2f} s"
    gateway = served.gateway
    if gateway is None:
        line += "; the gateway's counters could not be read"
    else:
        codes = ", ".join(f"{n} with {code}" for code, n in sorted((gateway.responses or {}).items()))
        line += f"; the gateway counted {gateway.arrivals} arrivals, answered {codes or 'none'}"
        if gateway.activations:
            line += (
                f", woke the service from zero {gateway.activations} time{'s' * (gateway.activations != 1)}"
            )
    if h.min_replicas == 0 and served.first_answer is not None:
        at, latency = served.first_answer
        line += (
            f"; its first request (sent at {at:.0f} s) was held at the door, answered after {latency:.1f} s"
        )
    return line + "".join(f"\n  - error: {e}" for e in served.error_samples)


def summarize(
    recorder: RunRecorder, *, duration_seconds: float, sample_seconds: float, png_name: str = PNG_NAME
) -> str:
    """report.md: a table per service, its scaling decisions, what went through the gateway, its
    replicas' cold and warm starts, multi-node placement, attribution."""
    started = recorder.started.strftime("%Y-%m-%d %H:%M:%S %Z")
    histories = sorted(recorder.services.values(), key=lambda h: h.name)
    lines = [
        "# inferfleet demo report",
        "",
        f"Load ran {duration_seconds:.0f} s from {started}; each service sampled every {sample_seconds:g} s.",
        "Every request went through the gateway; arrivals, queue and in flight at the door are the "
        "gateway's own series in Prometheus, as the autoscaler's fleet query reads them.",
        "",
        *TABLE_HEAD,
        *(_table_row(h) for h in histories),
        "",
        "## Scaling decisions",
        "",
    ]
    for h in histories:
        lines += _decision_lines(h)
    lines += ["", "## Through the gateway", ""] + [_served_line(h) for h in histories]
    lines += ["", "## Replica starts: cold and warm", "", *start_lines(recorder.starts, recorder.started)]
    lines += ["", "## Multi-node placement", ""]
    multi_node = [h for h in histories if h.pods_per_replica > 1]
    lines += [
        f"- **{h.name}** ({h.layout} per replica): {group_placement(h, recorder.node_zones)}"
        for h in multi_node
    ] or ["- no service needed more than one pod per replica"]
    lines += [
        "",
        f"Load, door, queue and replicas over time: [{png_name}]({png_name})",
        "",
        ATTRIBUTION,
        "",
    ]
    return "\n".join(lines)


def plot(recorder: RunRecorder, path: Path) -> None:
    """One subplot per service: offered load and queue (left axis), replicas (right), decisions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    histories = [h for _, h in sorted(recorder.services.items()) if h.samples]
    fig, axes = plt.subplots(
        max(len(histories), 1), 1, figsize=(11, 3.2 * max(len(histories), 1)), squeeze=False
    )
    for ax, h in zip(axes[:, 0], histories, strict=False):
        t = [s.t for s in h.samples]
        ax.plot(t, [s.load_rps for s in h.samples], color="tab:blue", label="offered load (req/s)")
        ax.plot(t, [s.queue for s in h.samples], color="tab:orange", label="queue (operator)")
        arrivals = [s.door.arrival_rate for s in h.samples]
        ax.plot(t, [math.nan if a is None else a for a in arrivals], color="tab:cyan",
                label="arrivals at the door (req/s)")  # fmt: skip
        queued = [s.door.queued for s in h.samples]
        ax.plot(t, [math.nan if q is None else q for q in queued], color="tab:red", linestyle=":",
                label="queue at the door")  # fmt: skip
        ax.set_ylabel("req/s, requests")
        ax.set_title(f"{h.name} ({h.layout})", loc="left", fontsize=10)
        replicas = ax.twinx()
        replicas.step(
            t, [s.desired for s in h.samples], where="post", color="tab:green", label="desired replicas"
        )
        ready = [s.ready for s in h.samples]
        replicas.step(
            t, ready, where="post", color="tab:purple", linewidth=4, alpha=0.3, label="ready replicas"
        )
        replicas.set_ylabel("replicas")
        replicas.set_ylim(0, max(max(s.desired for s in h.samples), 1) + 1)
        replicas.yaxis.set_major_locator(MaxNLocator(integer=True))
        for d in h.ordered_decisions():
            ax.axvline(d.t, color="tab:green" if d.is_up else "tab:red", alpha=0.4, linestyle="--")
            label = f"{d.from_replicas}→{d.to_replicas}"
            replicas.annotate(
                label, (d.t, d.to_replicas), xytext=(2, 4), textcoords="offset points", fontsize=7
            )
        handles = ax.get_legend_handles_labels()[0] + replicas.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the load started (dashed: scaling decisions, green up, red down)")
    fig.suptitle(ATTRIBUTION, fontsize=8, y=0.005, va="bottom")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def samples_json(recorder: RunRecorder) -> dict[str, Any]:
    """The run's samples and decisions per service, as recorded: to look at or to test with."""
    return {
        name: {
            "samples": [asdict(s) for s in h.samples],
            "decisions": [asdict(d) for d in h.ordered_decisions()],
            "served": None if h.served is None else asdict(h.served),
            **starts_json(recorder.starts, name),
        }
        for name, h in sorted(recorder.services.items())
    }


def write_report(
    recorder: RunRecorder, directory: Path, *, duration_seconds: float, sample_seconds: float
) -> Path:
    """Writes report.png, report.md and samples.json into `directory` (created); returns the
    markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    plot(recorder, directory / PNG_NAME)
    (directory / SAMPLES_NAME).write_text(json.dumps(samples_json(recorder), indent=1))
    markdown = directory / MARKDOWN_NAME
    markdown.write_text(summarize(recorder, duration_seconds=duration_seconds, sample_seconds=sample_seconds))
    return markdown
