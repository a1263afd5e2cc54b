"""Seeded synthetic clusters (racks of GPU nodes, already fragmented) and the arrivals to place."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

RACK_LABEL = "inferfleet.io/rack"
PRODUCT = "SIM-GPU-80GB"
GROUP_GPUS_PER_POD = 8


@dataclass(frozen=True)
class Node:
    name: str
    rack: str
    gpus: int


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    """Sorted by name; racks are runs of consecutive nodes."""
    prebound: tuple[tuple[str, int], ...]
    """The pods running before the arrivals: (node, GPUs)."""

    def free(self) -> dict[str, int]:
        free = {n.name: n.gpus for n in self.nodes}
        for node, gpus in self.prebound:
            free[node] -= gpus
        return free

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def racks(self) -> int:
        return len({n.rack for n in self.nodes})


@dataclass(frozen=True)
class Arrival:
    """One replica: a single pod (pods == 1) or a group of pods that must share one rack."""

    id: str
    pods: int
    gpus_per_pod: int

    @property
    def is_group(self) -> bool:
        return self.pods > 1

    @property
    def gpus(self) -> int:
        return self.pods * self.gpus_per_pod


@dataclass(frozen=True)
class Case:
    name: str
    cluster: Cluster
    arrivals: tuple[Arrival, ...]


@dataclass(frozen=True)
class Params:
    four_gpu_share: float = 0.125
    """Share of nodes with 4 GPUs instead of 8."""
    rack_nodes: tuple[int, int] = (4, 8)
    """Nodes per rack, drawn uniformly in this range (the last rack takes what is left)."""
    empty_share: float = 0.25
    """Share of nodes with nothing running before the arrivals."""
    demand: float = 1.3
    """Offered GPUs / free GPUs before the arrivals."""
    single_weights: tuple[tuple[int, float], ...] = ((1, 0.28), (2, 0.22), (4, 0.20), (8, 0.16))
    """(GPUs of a single-pod replica, weight)."""
    group_weight: float = 0.14
    group_pods: tuple[int, ...] = (2, 3, 4)


def case_rng(seed: int, *parts: object) -> random.Random:
    """A generator for one purpose; string seeds hash the same way in every Python process."""
    return random.Random("/".join(["placement", str(seed), *map(str, parts)]))


def fragment(nodes: Sequence[Node], rng: random.Random, empty_share: float) -> tuple[tuple[str, int], ...]:
    """Pods of 1-4 GPUs filling each non-empty node to a random level (a long-running cluster)."""
    pods: list[tuple[str, int]] = []
    for node in nodes:
        if rng.random() < empty_share:
            continue
        target = rng.randint(1, node.gpus)
        while target > 0:
            gpus = rng.randint(1, min(4, target))
            pods.append((node.name, gpus))
            target -= gpus
    return tuple(pods)


def make_nodes(size: int, rng: random.Random, params: Params) -> tuple[Node, ...]:
    nodes: list[Node] = []
    rack = 0
    while len(nodes) < size:
        count = min(rng.randint(*params.rack_nodes), size - len(nodes))
        for _ in range(count):
            gpus = 4 if rng.random() < params.four_gpu_share else 8
            nodes.append(Node(name=f"n{len(nodes):04d}", rack=f"rack-{rack:03d}", gpus=gpus))
        rack += 1
    return tuple(nodes)


def make_arrivals(free_gpus: int, rng: random.Random, params: Params) -> tuple[Arrival, ...]:
    """Replicas drawn from the mix until they ask for `demand` x the free GPUs."""
    kinds: list[tuple[int, int]] = [(1, gpus) for gpus, _ in params.single_weights] + [(0, 0)]
    weights = [w for _, w in params.single_weights] + [params.group_weight]
    arrivals: list[Arrival] = []
    offered = 0
    while offered < params.demand * free_gpus:
        pods, gpus = rng.choices(kinds, weights)[0]
        if pods == 0:
            pods, gpus = rng.choice(params.group_pods), GROUP_GPUS_PER_POD
        arrival = Arrival(id=f"r{len(arrivals):04d}", pods=pods, gpus_per_pod=gpus)
        arrivals.append(arrival)
        offered += arrival.gpus
    return tuple(arrivals)


def make_case(size: int, seed: int, params: Params = Params(), index: int = 0) -> Case:
    """Cluster `size`, instance `index`: its own seeded nodes, fragmentation and arrivals."""
    nodes = make_nodes(size, case_rng(seed, size, index, "nodes"), params)
    cluster = Cluster(nodes, fragment(nodes, case_rng(seed, size, index, "fragment"), params.empty_share))
    arrivals = make_arrivals(sum(cluster.free().values()), case_rng(seed, size, index, "arrivals"), params)
    return Case(name=f"{size}-nodes#{index}", cluster=cluster, arrivals=arrivals)
