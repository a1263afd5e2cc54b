"""The demo's live view: one table of InferenceServices, refreshed while the demo runs.

`build_snapshot` turns plain object dicts (InferenceServices, nodes, pods, as the API returns
them) into a `Snapshot`; `render_table` draws it with rich. Neither does IO, so both are tested
without a cluster. `StatusView` shows snapshots: a rich Live display on a terminal, otherwise
(CI, pipes) the table printed again only when something other than the clock changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from inferfleet.demo.door import DoorSample
from inferfleet.planning.names import GPU_PRODUCT_LABEL, SERVICE_LABEL, ZONE_LABEL

GPU_RESOURCE = "nvidia.com/gpu"
PIPE_WIDTH = 230
"""Columns of the table when stdout is not a terminal (rich would otherwise wrap it at 80)."""
NO_DOOR = DoorSample()
"""A service no gateway reported on (yet)."""


@dataclass(frozen=True)
class LastDecision:
    from_replicas: int
    to_replicas: int
    reason: str
    at: datetime | None


@dataclass(frozen=True)
class ServiceRow:
    name: str
    model: str
    layout: str
    ready: int
    desired: int
    queue: float | None
    """status.queueDepth: the requests waiting, at the door and on engines, as the operator saw them."""
    gpus: int
    placement: str
    phase: str
    last_decision: LastDecision | None
    door: DoorSample = NO_DOOR
    """The gateway's queue, requests on engines and arrival rate for the service (Prometheus)."""


@dataclass(frozen=True)
class GpuUsage:
    product: str
    used: int
    total: int


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    elapsed_seconds: float
    remaining_seconds: float | None
    gpus: tuple[GpuUsage, ...]
    rows: tuple[ServiceRow, ...]

    def content(self) -> tuple[tuple[GpuUsage, ...], tuple[ServiceRow, ...]]:
        """What a reprint is for: everything but the clock and the load, which moves every tick."""
        return self.gpus, tuple(replace(row, queue=None, door=NO_DOOR) for row in self.rows)


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod requests (limits count when requests are absent, as for extended resources)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        amount = (resources.get("requests") or {}).get(GPU_RESOURCE) or (resources.get("limits") or {}).get(
            GPU_RESOURCE
        )
        total += int(amount or 0)
    return total


def holds_gpus(pod: Mapping[str, Any]) -> bool:
    """Bound to a node and not finished: its GPUs are taken, even while it starts or terminates."""
    bound = bool((pod.get("spec") or {}).get("nodeName"))
    return bound and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def node_labels(nodes: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in nodes}


def gpu_usage(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> tuple[GpuUsage, ...]:
    """GPUs in use and allocatable per product, over every node with GPUs."""
    product_of: dict[str, str] = {}
    total: Counter[str] = Counter()
    for node in nodes:
        gpus = int(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0))
        if gpus:
            product = (node["metadata"].get("labels") or {}).get(GPU_PRODUCT_LABEL, "unknown")
            product_of[node["metadata"]["name"]] = product
            total[product] += gpus
    used: Counter[str] = Counter()
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if holds_gpus(pod) and node_name in product_of:
            used[product_of[node_name]] += pod_gpus(pod)
    return tuple(GpuUsage(p, used[p], total[p]) for p in sorted(total))


def placement_summary(placement: Iterable[Mapping[str, Any]], labels: Mapping[str, Mapping[str, str]]) -> str:
    """Replicas per zone, e.g. "zone-a:2 zone-b:1"; a domain finer than a zone (a rack) is shown too."""
    where: Counter[str] = Counter()
    for entry in placement:
        domain = str(entry.get("domain") or "")
        zones = {labels.get(node, {}).get(ZONE_LABEL, "") for node in entry.get("nodes") or []} - {""}
        zone = ",".join(sorted(zones)) or domain or "?"
        where[zone if domain in ("", zone) else f"{zone}/{domain}"] += 1
    return " ".join(f"{key}:{n}" for key, n in sorted(where.items())) or "-"


def last_decision(status: Mapping[str, Any]) -> LastDecision | None:
    history = status.get("scalingHistory") or []
    if not history:
        return None
    last = history[-1]
    return LastDecision(
        int(last["from"]), int(last["to"]), str(last.get("reason", "")), parse_time(last.get("time"))
    )


def layout_of(plan: Mapping[str, Any]) -> str:
    if not plan:
        return "-"
    layout = plan.get("layout") or f"{plan.get('tensorParallel', '?')}x{plan.get('pipelineParallel', '?')}"
    pods = int(plan.get("podsPerReplica") or 1)
    return f"{layout} / {pods} pod{'s' if pods > 1 else ''}"


def service_row(
    service: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    labels: Mapping[str, Mapping[str, str]],
    door: DoorSample = NO_DOOR,
) -> ServiceRow:
    meta, spec, status = service["metadata"], service.get("spec") or {}, service.get("status") or {}
    own = [
        p
        for p in pods
        if p["metadata"].get("namespace") == meta.get("namespace")
        and (p["metadata"].get("labels") or {}).get(SERVICE_LABEL) == meta["name"]
    ]
    queue = status.get("queueDepth")
    return ServiceRow(
        name=meta["name"],
        model=(spec.get("model") or {}).get("name", "-"),
        layout=layout_of(status.get("shardPlan") or {}),
        ready=int(status.get("readyReplicas") or 0),
        desired=int(spec.get("replicas", 1)),
        queue=None if queue is None else float(queue),
        gpus=sum(pod_gpus(p) for p in own if holds_gpus(p)),
        placement=placement_summary(status.get("placement") or [], labels),
        phase=str(status.get("phase") or "-"),
        last_decision=last_decision(status),
        door=door,
    )


def build_snapshot(
    services: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    elapsed_seconds: float,
    remaining_seconds: float | None,
    door: Mapping[str, DoorSample] | None = None,
) -> Snapshot:
    """`door`: the gateway's signals by service name (demo.door.read_door), if any."""
    nodes, pods = list(nodes), list(pods)
    labels = node_labels(nodes)
    door = door or {}
    rows = tuple(
        sorted(
            (service_row(s, pods, labels, door.get(s["metadata"]["name"], NO_DOOR)) for s in services),
            key=lambda r: r.name,
        )
    )
    return Snapshot(now, elapsed_seconds, remaining_seconds, gpu_usage(nodes, pods), rows)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    return f"{minutes}:{secs:02d}"


def _decision_text(decision: LastDecision | None, now: datetime) -> Text:
    if decision is None:
        return Text("-", style="dim")
    arrow = "↑" if decision.to_replicas > decision.from_replicas else "↓"
    style = "green" if arrow == "↑" else "yellow"
    age = f" {_clock((now - decision.at).total_seconds())} ago" if decision.at else ""
    text = Text(f"{arrow} {decision.from_replicas}→{decision.to_replicas} ", style=style)
    return text.append(f"{decision.reason}{age}", style="default")


def header(snapshot: Snapshot) -> Text:
    clock = f"elapsed {_clock(snapshot.elapsed_seconds)}"
    if snapshot.remaining_seconds is not None:
        clock += f", remaining {_clock(snapshot.remaining_seconds)}"
    gpus = "  ".join(f"{g.product} {g.used}/{g.total}" for g in snapshot.gpus) or "no GPU nodes"
    return Text.assemble(("inferfleet demo", "bold"), f"  {clock}   GPUs in use: {gpus}")


COLUMNS = ("SERVICE", "MODEL", "LAYOUT", "READY/DESIRED", "ARRIVALS/s", "DOOR QUEUE", "IN FLIGHT",
           "QUEUE", "GPUs", "PLACEMENT", "PHASE", "LAST SCALING DECISION")  # fmt: skip
"""ARRIVALS/s, DOOR QUEUE and IN FLIGHT are the gateway's, over the last minute and now; QUEUE
is status.queueDepth, what the operator last saw waiting (at the door and on the engines)."""
NUMERIC = {"READY/DESIRED", "ARRIVALS/s", "DOOR QUEUE", "IN FLIGHT", "QUEUE", "GPUs"}


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(snapshot: Snapshot) -> RenderableType:
    table = Table(expand=False, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in snapshot.rows:
        phase_style = {"Ready": "green", "Degraded": "yellow", "Failed": "red"}.get(row.phase, "cyan")
        table.add_row(
            row.name,
            row.model,
            row.layout,
            f"{row.ready}/{row.desired}",
            _number(row.door.arrival_rate, 1),
            _number(row.door.queued),
            _number(row.door.in_flight),
            "-" if row.queue is None else f"{row.queue:g}",
            str(row.gpus),
            row.placement,
            Text(row.phase, style=phase_style),
            _decision_text(row.last_decision, snapshot.taken_at),
        )
    return Group(header(snapshot), table)


class StatusView:
    """Shows snapshots: live on a terminal, otherwise printed when their content changes."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        if console is None and not self.console.is_terminal:
            self.console = Console(width=PIPE_WIDTH)
        self._live: Live | None = None
        self._printed: object = None

    def __enter__(self) -> StatusView:
        if self.console.is_terminal:
            # Lines the demo prints while live appear above the table (Live redirects stdout).
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        return self

    def show(self, snapshot: Snapshot) -> None:
        if self._live is not None:
            self._live.update(render_table(snapshot), refresh=True)
        elif snapshot.content() != self._printed:
            self.console.print(render_table(snapshot))
            self._printed = snapshot.content()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
