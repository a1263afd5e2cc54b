"""The exact arm: CP-SAT with every arrival known in advance, maximizing replicas placed.

Same constraints as the cluster: free GPUs per node, a group's pods on distinct nodes of one
rack, a replica placed whole or not at all. The objective counts replicas first and GPUs placed
second. Offline, replicas of the same shape are interchangeable, so the model counts them
instead of naming them (one variable per shape and node, or shape and rack), which removes the
symmetry that otherwise keeps CP-SAT from proving optimality; which arrivals of a shape get
placed (the first ones) does not change any metric. A group pod takes more than half of any
node, so "one group pod per node" is exactly "a group's pods on distinct nodes" here. One
search worker by default, so a run is reproducible.
"""

from __future__ import annotations

import time
from collections import defaultdict

from ortools.sat.python import cp_model

from bench.placement.arms import SOLVER, Outcome
from bench.placement.cluster import Arrival, Case

Shape = tuple[int, int]
"""(pods, GPUs per pod) of a group."""


class _Model:
    def __init__(self, case: Case) -> None:
        self.case = case
        self.free = case.cluster.free()
        self.rack_of = {n.name: n.rack for n in case.cluster.nodes}
        self.singles: dict[int, list[Arrival]] = defaultdict(list)
        self.groups: dict[Shape, list[Arrival]] = defaultdict(list)
        for a in case.arrivals:
            if a.is_group:
                self.groups[(a.pods, a.gpus_per_pod)].append(a)
            else:
                self.singles[a.gpus_per_pod].append(a)
        biggest = max(n.gpus for n in case.cluster.nodes)
        if any(2 * gpus <= biggest for _, gpus in self.groups):
            raise ValueError("the solver's model needs group pods larger than half of every node")
        m = self.model = cp_model.CpModel()
        names = [n.name for n in case.cluster.nodes]
        racks = sorted(set(self.rack_of.values()))
        self.count = {
            (g, n): m.new_int_var(0, self.free[n] // g, f"singles[{g},{n}]")
            for g in self.singles
            for n in names
            if self.free[n] >= g
        }
        pod_sizes = sorted({gpus for _, gpus in self.groups})
        self.hosts = {
            (g, n): m.new_bool_var(f"hosts[{g},{n}]") for g in pod_sizes for n in names if self.free[n] >= g
        }
        self.in_rack = {
            (shape, r): m.new_int_var(0, len(arrivals), f"groups[{shape},{r}]")
            for shape, arrivals in self.groups.items()
            for r in racks
        }
        for n in names:
            m.add_at_most_one(self.hosts[g, n] for g in pod_sizes if (g, n) in self.hosts)
            load = [g * v for (g, node), v in self.count.items() if node == n]
            load += [g * v for (g, node), v in self.hosts.items() if node == n]
            if load:
                m.add(sum(load) <= self.free[n])
        for g in pod_sizes:
            for r in racks:
                pods = [p * self.in_rack[(p, gg), r] for p, gg in self.groups if gg == g]
                m.add(
                    sum(pods)
                    == sum(v for (gg, n), v in self.hosts.items() if gg == g and self.rack_of[n] == r)
                )
        weight = sum(a.gpus for a in case.arrivals) + 1
        objective = []
        for g, arrivals in self.singles.items():
            placed = sum(v for (gg, _), v in self.count.items() if gg == g)
            m.add(placed <= len(arrivals))
            objective.append((weight + g) * placed)
        for shape, arrivals in self.groups.items():
            placed = sum(v for (s, _), v in self.in_rack.items() if s == shape)
            m.add(placed <= len(arrivals))
            objective.append((weight + shape[0] * shape[1]) * placed)
        m.maximize(sum(objective))

    def hint(self, outcome: Outcome) -> None:
        """Start from a heuristic's whole replicas (partial groups dropped): a feasible first solution."""
        count: dict[tuple[int, str], int] = defaultdict(int)
        hosts: set[tuple[int, str]] = set()
        in_rack: dict[tuple[Shape, str], int] = defaultdict(int)
        for a in self.case.arrivals:
            nodes = outcome.placements.get(a.id, ())
            if not nodes or any(n is None for n in nodes):
                continue
            if a.is_group:
                hosts.update((a.gpus_per_pod, str(n)) for n in nodes)
                in_rack[(a.pods, a.gpus_per_pod), self.rack_of[str(nodes[0])]] += 1
            else:
                count[a.gpus_per_pod, str(nodes[0])] += 1
        for key, var in self.count.items():
            self.model.add_hint(var, count[key])
        for hkey, bvar in self.hosts.items():
            self.model.add_hint(bvar, hkey in hosts)
        for rkey, ivar in self.in_rack.items():
            self.model.add_hint(ivar, in_rack[rkey])

    def placements(self, solver: cp_model.CpSolver) -> dict[str, tuple[str | None, ...]]:
        """Name the placed replicas: the first arrivals of each shape, on the nodes the counts say."""
        out: dict[str, tuple[str | None, ...]] = {a.id: (None,) * a.pods for a in self.case.arrivals}
        for g, arrivals in self.singles.items():
            waiting = iter(arrivals)
            for (gg, node), var in self.count.items():
                for _ in range(solver.value(var) if gg == g else 0):
                    out[next(waiting).id] = (node,)
        free_hosts: dict[tuple[int, str], list[str]] = defaultdict(list)
        for (g, node), bvar in self.hosts.items():
            if solver.boolean_value(bvar):
                free_hosts[g, self.rack_of[node]].append(node)
        for shape, arrivals in self.groups.items():
            waiting = iter(arrivals)
            for (s, rack), ivar in self.in_rack.items():
                for _ in range(solver.value(ivar) if s == shape else 0):
                    pool = free_hosts[shape[1], rack]
                    out[next(waiting).id] = tuple(pool.pop(0) for _ in range(shape[0]))
        return out


def solve(
    case: Case, *, time_limit_s: float = 20.0, workers: int = 1, hint: Outcome | None = None
) -> Outcome:
    started = time.perf_counter()
    model = _Model(case)
    if hint is not None:
        model.hint(hint)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    status = solver.solve(model.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT found no placement for {case.name}: {solver.status_name(status)}")
    return Outcome(
        SOLVER,
        model.placements(solver),
        status=solver.status_name(status),
        wall_s=time.perf_counter() - started,
    )
