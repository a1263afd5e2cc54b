"""All-or-nothing, topology-aware placement of multi-node replica groups (a gang scheduler's core).

A group is one replica spread over `pods` pods, one per node, each holding `gpus_per_pod` GPUs of
one product, on nodes that share one value of a topology label. Either the whole group fits in one
topology domain or nothing is placed: per-pod scheduling could bind half a group and hold its GPUs
forever, this never does.

Best fit limits fragmentation: inside a domain the candidates with the fewest free GPUs are taken,
and among feasible domains the one left with the fewest free GPUs on the chosen nodes, then the one
with the least free GPUs overall, then the first by name. Nodes whose cache already holds the
model's weights (`warm`) only break ties: among candidates with equally many free GPUs, and among
domains equal on both counts, the warmer wins, never at the cost of a stranded GPU. Everything is
sorted, so plans are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from inferfleet.api import SchedulingSpec
from inferfleet.planning.inventory import GpuNode


@dataclass(frozen=True)
class BoundPod:
    """A pod already bound to a node, holding GPUs."""

    node: str
    gpus: int
    group: str | None = None
    """"<namespace>/<service>/<replica>" when the pod belongs to an inferfleet group."""


@dataclass(frozen=True)
class Reservation:
    """A placement already decided for a group whose pods may not be bound yet."""

    group: str
    nodes: tuple[str, ...]
    gpus_per_pod: int


@dataclass(frozen=True)
class NodeFree:
    name: str
    domain: str
    free_gpus: int


@dataclass(frozen=True)
class GroupPlacement:
    domain: str
    nodes: tuple[str, ...]
    """By shard rank: nodes[0] hosts rank 0 (the leader)."""


@dataclass(frozen=True)
class Shortfall:
    message: str


def compute_free_gpus(
    nodes: Iterable[GpuNode],
    product: str | None,
    topology_key: str,
    bound: Iterable[BoundPod],
    reservations: Iterable[Reservation],
    scheduling: SchedulingSpec | None = None,
) -> list[NodeFree]:
    """Free GPUs of the `product` nodes (any product when None) carrying `topology_key` that pods
    with `scheduling` may use now (None: no extra tolerations).

    A reservation holds its GPUs on a node only until one of its group's pods is bound there (the
    bound pod then counts), so nothing is counted twice. Sorted by (domain, name).
    """
    used: dict[str, int] = {}
    bound_groups: set[tuple[str, str]] = set()
    for pod in bound:
        used[pod.node] = used.get(pod.node, 0) + pod.gpus
        if pod.group is not None:
            bound_groups.add((pod.group, pod.node))
    for res in reservations:
        for node in res.nodes:
            if (res.group, node) not in bound_groups:
                used[node] = used.get(node, 0) + res.gpus_per_pod
    free = [
        NodeFree(name=n.name, domain=n.labels[topology_key], free_gpus=max(0, n.gpus - used.get(n.name, 0)))
        for n in nodes
        if n.accepts(scheduling) and (product is None or n.product == product) and topology_key in n.labels
    ]
    return sorted(free, key=lambda f: (f.domain, f.name))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def plan_group_placement(
    free: Sequence[NodeFree],
    pods: int,
    gpus_per_pod: int,
    *,
    product: str | None,
    topology_key: str,
    warm: frozenset[str] = frozenset(),
) -> GroupPlacement | Shortfall:
    """Place one group of `pods` x `gpus_per_pod` GPUs in one domain (best fit), or say why it can't.
    `warm`: nodes holding the model's weights, preferred among otherwise equal choices."""
    if pods < 1 or gpus_per_pod < 1:
        raise ValueError(f"a group needs pods >= 1 and gpus_per_pod >= 1, got {pods} x {gpus_per_pod}")
    by_domain: dict[str, list[NodeFree]] = {}
    for node in free:
        by_domain.setdefault(node.domain, []).append(node)

    best: tuple[tuple[int, int, int, str], GroupPlacement] | None = None
    for domain, members in by_domain.items():
        candidates = sorted(
            (n for n in members if n.free_gpus >= gpus_per_pod),
            key=lambda n: (n.free_gpus, n.name not in warm, n.name),
        )
        if len(candidates) < pods:
            continue
        chosen = candidates[:pods]
        key = (
            sum(n.free_gpus - gpus_per_pod for n in chosen),
            sum(n.free_gpus for n in members),
            -sum(n.name in warm for n in chosen),
            domain,
        )
        if best is None or key < best[0]:
            best = (key, GroupPlacement(domain=domain, nodes=tuple(sorted(n.name for n in chosen))))
    if best is not None:
        return best[1]

    gpus = f"{product} GPUs" if product else "GPUs (any GPU)"
    need = f"needs {_plural(pods, 'node')} with {gpus_per_pod} free {gpus} in one {topology_key}"
    if not free:
        return Shortfall(f"{need}; no schedulable node of that kind carries the {topology_key} label")

    def fitting(members: list[NodeFree]) -> int:
        return sum(n.free_gpus >= gpus_per_pod for n in members)

    domain, members = min(by_domain.items(), key=lambda item: (-fitting(item[1]), item[0]))
    fit = fitting(members)
    if not fit:
        return Shortfall(f"{need}; no node has that many ({_plural(len(free), 'node')} with fewer free GPUs)")
    fewer = len(members) - fit
    detail = (
        f" ({_plural(fewer, 'node')} there {'has' if fewer == 1 else 'have'} fewer free GPUs)"
        if fewer
        else ""
    )
    return Shortfall(f"{need}; best is {domain} with {_plural(fit, 'such node')}{detail}")


def plan_groups(
    free: Sequence[NodeFree],
    replicas: Sequence[int],
    pods: int,
    gpus_per_pod: int,
    *,
    product: str | None,
    topology_key: str,
    warm: frozenset[str] = frozenset(),
) -> dict[int, GroupPlacement | Shortfall]:
    """Place replicas one after another, each taking its GPUs from what the earlier ones left.

    Planning stops at the first replica that does not fit: the groups are alike, so the later
    ones cannot fit either, and they share its Shortfall (an absurd replica count costs no work)."""
    remaining = {n.name: n for n in free}
    plans: dict[int, GroupPlacement | Shortfall] = {}
    for i, replica in enumerate(replicas):
        plan = plan_group_placement(
            list(remaining.values()),
            pods,
            gpus_per_pod,
            product=product,
            topology_key=topology_key,
            warm=warm,
        )
        if isinstance(plan, Shortfall):
            plans.update(dict.fromkeys(replicas[i:], plan))
            break
        for name in plan.nodes:
            remaining[name] = replace(remaining[name], free_gpus=remaining[name].free_gpus - gpus_per_pod)
        plans[replica] = plan
    return plans
