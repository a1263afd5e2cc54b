"""The heuristic arms: inferfleet's planner (three ways of placing single pods) and the default scheduler.

Every arm sees the arrivals one at a time, in order, and never moves a pod once bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench.placement.cluster import PRODUCT, RACK_LABEL, Arrival, Case, Cluster
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.placement import BoundPod, GroupPlacement, compute_free_gpus, plan_group_placement

INFERFLEET = "inferfleet"
INFERFLEET_MOSTALLOCATED = "inferfleet+mostallocated"
INFERFLEET_BESTFIT = "inferfleet+bestfit"
LEAST_ALLOCATED = "least-allocated"
SOLVER = "solver"
HEURISTIC_ARMS = (INFERFLEET, INFERFLEET_MOSTALLOCATED, INFERFLEET_BESTFIT, LEAST_ALLOCATED)
MAX_NODE_SCORE = 100

Strategy = Literal["LeastAllocated", "MostAllocated"]
"""NodeResourcesFit's scoringStrategy.type."""
LEAST: Strategy = "LeastAllocated"
MOST: Strategy = "MostAllocated"

Singles = Literal["least-allocated", "most-allocated", "best-fit"]
"""How an inferfleet arm places a single-pod replica: the default profile's kube-scheduler, the
`inferfleet-binpack` profile's, or the operator's own planner."""
SINGLES_OF_ARM: dict[str, Singles] = {
    INFERFLEET: "least-allocated",
    INFERFLEET_MOSTALLOCATED: "most-allocated",
    INFERFLEET_BESTFIT: "best-fit",
}


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


def fit_score(strategy: Strategy, allocatable: int, free: int, gpus: int) -> int:
    """NodeResourcesFit's score on one resource (nvidia.com/gpu) with the pod counted, in integers
    as the scheduler computes it: LeastAllocated (allocatable - requested) * 100 / allocatable,
    MostAllocated requested * 100 / allocatable."""
    requested = allocatable - free + gpus
    if strategy == MOST:
        return min(requested, allocatable) * MAX_NODE_SCORE // allocatable
    return (allocatable - requested) * MAX_NODE_SCORE // allocatable


def _scores(state: FreeGpus, gpus: int, rack: str | None, strategy: Strategy) -> Iterator[tuple[str, int]]:
    """Feasible nodes (enough free GPUs, in `rack` if given) with their NodeResourcesFit score."""
    for node in state.nodes:
        free = state.free[node.name]
        if free >= gpus and (rack is None or node.rack == rack):
            yield node.name, fit_score(strategy, node.gpus, free, gpus)


def scheduler_node(
    state: FreeGpus, gpus: int, rack: str | None = None, strategy: Strategy = LEAST
) -> str | None:
    """kube-scheduler's choice for one pod: the highest score; the real scheduler breaks ties at
    random, this by name (the first node in name order)."""
    best: str | None = None
    best_score = -1
    for name, score in _scores(state, gpus, rack, strategy):
        if score > best_score:
            best, best_score = name, score
    return best


def top_scored(state: FreeGpus, gpus: int, rack: str | None = None, strategy: Strategy = LEAST) -> set[str]:
    """Every node the kube-scheduler could pick for one pod (all share the top score)."""
    scores = dict(_scores(state, gpus, rack, strategy))
    top = max(scores.values(), default=None)
    return {name for name, score in scores.items() if score == top}


def scheduler_pods(state: FreeGpus, arrival: Arrival, strategy: Strategy = LEAST) -> tuple[str | None, ...]:
    """Each pod scheduled on its own; a group's later pods keep to the rack of its first bound pod.

    That is the required pod affinity (same replica label, rack topology) LeaderWorkerSet's
    exclusive-topology puts on a group's pods: with no matching pod bound yet, a pod that matches
    its own affinity term may go anywhere.
    """
    nodes: list[str | None] = []
    rack: str | None = None
    for _ in range(arrival.pods):
        node = scheduler_node(state, arrival.gpus_per_pod, rack, strategy)
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
        out.placements[arrival.id] = scheduler_pods(state, arrival, LEAST)
        out.decision_ms.append((time.perf_counter() - started) * 1000)
    return out


def gpu_nodes(cluster: Cluster) -> list[GpuNode]:
    return [GpuNode(n.name, PRODUCT, n.gpus, None, {RACK_LABEL: n.rack}) for n in cluster.nodes]


def plan(nodes: Sequence[GpuNode], bound: Sequence[BoundPod], arrival: Arrival) -> tuple[str | None, ...]:
    """What the operator does for one replica: free GPUs from the nodes and the bound pods
    (`compute_free_gpus`), then `plan_group_placement`; all pods None when it finds no place."""
    free = compute_free_gpus(nodes, PRODUCT, RACK_LABEL, bound, ())
    placement = plan_group_placement(
        free, arrival.pods, arrival.gpus_per_pod, product=PRODUCT, topology_key=RACK_LABEL
    )
    return placement.nodes if isinstance(placement, GroupPlacement) else (None,) * arrival.pods


def run_inferfleet(case: Case, singles: Singles) -> Outcome:
    """Groups through the operator's own planner; single pods as `singles` says.

    The timed decision is what the operator does for one replica (`plan`), or for a single pod
    left to the kube-scheduler, the simulated filter and score: LeastAllocated for a Deployment's
    pod under the default profile, MostAllocated on nvidia.com/gpu under `inferfleet-binpack`.
    """
    state = FreeGpus(case.cluster)
    nodes = gpu_nodes(case.cluster)
    bound = [BoundPod(node, gpus) for node, gpus in case.cluster.prebound]
    arm = next(arm for arm, how in SINGLES_OF_ARM.items() if how == singles)
    out = Outcome(arm, {})
    for arrival in case.arrivals:
        started = time.perf_counter()
        if arrival.pods == 1 and singles != "best-fit":
            chosen = scheduler_pods(state, arrival, LEAST if singles == "least-allocated" else MOST)
            out.decision_ms.append((time.perf_counter() - started) * 1000)
        else:
            chosen = plan(nodes, bound, arrival)
            out.decision_ms.append((time.perf_counter() - started) * 1000)
            for node in chosen:
                if node is not None:
                    state.take(node, arrival.gpus_per_pod)
        group = arrival.id if arrival.is_group else None
        bound += [BoundPod(node, arrival.gpus_per_pod, group) for node in chosen if node is not None]
        out.placements[arrival.id] = chosen
    return out


def run_heuristics(case: Case) -> dict[str, Outcome]:
    return {
        **{arm: run_inferfleet(case, singles) for arm, singles in SINGLES_OF_ARM.items()},
        LEAST_ALLOCATED: run_least_allocated(case),
    }
