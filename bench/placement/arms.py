"""The heuristic arms: inferfleet's planner (two ways of placing single pods) and the default scheduler.

Every arm sees the arrivals one at a time, in order, and never moves a pod once bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.placement.cluster import PRODUCT, RACK_LABEL, Arrival, Case, Cluster
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.placement import BoundPod, GroupPlacement, compute_free_gpus, plan_group_placement

INFERFLEET = "inferfleet"
INFERFLEET_BESTFIT = "inferfleet+bestfit"
LEAST_ALLOCATED = "least-allocated"
SOLVER = "solver"
HEURISTIC_ARMS = (INFERFLEET, INFERFLEET_BESTFIT, LEAST_ALLOCATED)
MAX_NODE_SCORE = 100


@dataclass
class Outcome:
    arm: str
    placements: dict[str, tuple[str | None, ...]]
    """Arrival id -> the node of each of its pods, None for a pod that was never bound."""
    decision_ms: list[float] = field(default_factory=list)
    """Per replica: the time the arm took to decide where its pods go."""
    status: str | None = None
    """Solver only: OPTIMAL when optimality was proven, else FEASIBLE."""
    wall_s: float = 0.0


class FreeGpus:
    """Free GPUs per node while an arm places, nodes in name order."""

    def __init__(self, cluster: Cluster) -> None:
        self.nodes = cluster.nodes
        self.free = cluster.free()
        self.rack = {n.name: n.rack for n in cluster.nodes}

    def take(self, node: str, gpus: int) -> None:
        if self.free[node] < gpus:
            raise ValueError(f"{node} has {self.free[node]} free GPUs, cannot take {gpus}")
        self.free[node] -= gpus


def _least_allocated_scores(state: FreeGpus, gpus: int, rack: str | None) -> Iterator[tuple[str, int]]:
    """Feasible nodes (enough free GPUs, in `rack` if given) with NodeResourcesFit's LeastAllocated
    score, (allocatable - requested) * 100 / allocatable in integers."""
    for node in state.nodes:
        free = state.free[node.name]
        if free >= gpus and (rack is None or node.rack == rack):
            yield node.name, (free - gpus) * MAX_NODE_SCORE // node.gpus


def least_allocated_node(state: FreeGpus, gpus: int, rack: str | None = None) -> str | None:
    """kube-scheduler's choice for one pod; the real scheduler breaks ties at random, this by name."""
    best: str | None = None
    best_score = -1
    for name, score in _least_allocated_scores(state, gpus, rack):
        if score > best_score:
            best, best_score = name, score
    return best


def least_allocated_ties(state: FreeGpus, gpus: int, rack: str | None = None) -> set[str]:
    """Every node the kube-scheduler could pick for one pod (all share the top score)."""
    scores = dict(_least_allocated_scores(state, gpus, rack))
    top = max(scores.values(), default=None)
    return {name for name, score in scores.items() if score == top}


def least_allocated_pods(state: FreeGpus, arrival: Arrival) -> tuple[str | None, ...]:
    """Each pod scheduled on its own; a group's later pods keep to the rack of its first bound pod.

    That is the required pod affinity (same replica label, rack topology) LeaderWorkerSet's
    exclusive-topology puts on a group's pods: with no matching pod bound yet, a pod that matches
    its own affinity term may go anywhere.
    """
    nodes: list[str | None] = []
    rack: str | None = None
    for _ in range(arrival.pods):
        node = least_allocated_node(state, arrival.gpus_per_pod, rack)
        if node is not None:
            state.take(node, arrival.gpus_per_pod)
            rack = rack or state.rack[node]
        nodes.append(node)
    return tuple(nodes)


def run_least_allocated(case: Case) -> Outcome:
    state = FreeGpus(case.cluster)
    out = Outcome(LEAST_ALLOCATED, {})
    for arrival in case.arrivals:
        started = time.perf_counter()
        out.placements[arrival.id] = least_allocated_pods(state, arrival)
        out.decision_ms.append((time.perf_counter() - started) * 1000)
    return out


def gpu_nodes(cluster: Cluster) -> list[GpuNode]:
    return [
        GpuNode(n.name, PRODUCT, n.gpus, None, {RACK_LABEL: n.rack}, schedulable=True) for n in cluster.nodes
    ]


def run_inferfleet(case: Case, *, best_fit_singles: bool) -> Outcome:
    """Groups (and, with best_fit_singles, single pods) through the operator's own planner.

    The timed decision is what the operator does for one replica: free GPUs from the nodes and
    the bound pods (`compute_free_gpus`), then `plan_group_placement`. Without best_fit_singles a
    single pod goes where the kube-scheduler would put a Deployment's pod (least allocated).
    """
    state = FreeGpus(case.cluster)
    nodes = gpu_nodes(case.cluster)
    bound = [BoundPod(node, gpus) for node, gpus in case.cluster.prebound]
    out = Outcome(INFERFLEET_BESTFIT if best_fit_singles else INFERFLEET, {})
    for arrival in case.arrivals:
        started = time.perf_counter()
        if arrival.pods == 1 and not best_fit_singles:
            chosen = least_allocated_pods(state, arrival)
            out.decision_ms.append((time.perf_counter() - started) * 1000)
        else:
            free = compute_free_gpus(nodes, PRODUCT, RACK_LABEL, bound, ())
            plan = plan_group_placement(
                free, arrival.pods, arrival.gpus_per_pod, product=PRODUCT, topology_key=RACK_LABEL
            )
            out.decision_ms.append((time.perf_counter() - started) * 1000)
            if isinstance(plan, GroupPlacement):
                chosen = plan.nodes
                for node in chosen:
                    state.take(node, arrival.gpus_per_pod)
            else:
                chosen = (None,) * arrival.pods
        group = arrival.id if arrival.is_group else None
        bound += [BoundPod(node, arrival.gpus_per_pod, group) for node in chosen if node is not None]
        out.placements[arrival.id] = chosen
    return out


def run_heuristics(case: Case) -> dict[str, Outcome]:
    return {
        INFERFLEET: run_inferfleet(case, best_fit_singles=False),
        INFERFLEET_BESTFIT: run_inferfleet(case, best_fit_singles=True),
        LEAST_ALLOCATED: run_least_allocated(case),
    }
