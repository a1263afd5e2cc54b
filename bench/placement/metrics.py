"""What is counted for an arm's outcome, the same way for every arm, and the checks of its validity.

Stranded GPUs = GPUs held by the pods of partially placed groups (they serve nothing)
              + free GPUs left on nodes whose free count is below the smallest per-pod request the
                arm refused (free capacity that no refused request could have used).
A replica is refused when not all its pods are bound; a group's per-pod request is its
gpus_per_pod. An arm that refused nothing strands no free GPUs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.placement.arms import Outcome
from bench.placement.cluster import Case

COUNT_KEYS = (
    "replicas_offered",
    "replicas_placed",
    "singles_offered",
    "singles_placed",
    "groups_offered",
    "groups_placed",
    "partial_groups",
    "gpus_offered",
    "gpus_serving",
    "gpus_held_by_partial_groups",
    "free_gpus_end",
    "stranded_free_gpus",
    "stranded_gpus",
)


def violations(case: Case, outcome: Outcome) -> list[str]:
    """Broken constraints: over-committed nodes, groups split over racks or sharing a node."""
    free = case.cluster.free()
    rack = {n.name: n.rack for n in case.cluster.nodes}
    problems: list[str] = []
    for a in case.arrivals:
        nodes = [n for n in outcome.placements.get(a.id, ()) if n is not None]
        for node in nodes:
            free[node] -= a.gpus_per_pod
        if a.is_group and len({rack[n] for n in nodes}) > 1:
            problems.append(f"{outcome.arm}: group {a.id} spans racks {sorted({rack[n] for n in nodes})}")
        if a.is_group and len(set(nodes)) < len(nodes):
            problems.append(f"{outcome.arm}: group {a.id} puts two pods on one node: {nodes}")
    problems += [f"{outcome.arm}: {node} over-committed by {-f} GPUs" for node, f in free.items() if f < 0]
    return problems


def count(case: Case, outcome: Outcome) -> dict[str, int]:
    free = case.cluster.free()
    c: Counter[str] = Counter()
    refused_sizes: list[int] = []
    for a in case.arrivals:
        bound = [n for n in outcome.placements.get(a.id, ()) if n is not None]
        for node in bound:
            free[node] -= a.gpus_per_pod
        whole = len(bound) == a.pods
        kind = "groups" if a.is_group else "singles"
        c["replicas_offered"] += 1
        c[f"{kind}_offered"] += 1
        c["gpus_offered"] += a.gpus
        if whole:
            c["replicas_placed"] += 1
            c[f"{kind}_placed"] += 1
            c["gpus_serving"] += a.gpus
        else:
            refused_sizes.append(a.gpus_per_pod)
            if bound:
                c["partial_groups"] += 1
                c["gpus_held_by_partial_groups"] += len(bound) * a.gpus_per_pod
    smallest = min(refused_sizes, default=0)
    c["free_gpus_end"] = sum(free.values())
    c["stranded_free_gpus"] = sum(f for f in free.values() if f < smallest)
    c["stranded_gpus"] = c["gpus_held_by_partial_groups"] + c["stranded_free_gpus"]
    counts = {key: c[key] for key in COUNT_KEYS}
    counts["smallest_refused_gpus_per_pod"] = smallest
    return counts


def decision_times(ms: Sequence[float]) -> dict[str, float | None]:
    if not ms:
        return {"decision_ms_mean": None, "decision_ms_max": None}
    return {"decision_ms_mean": round(sum(ms) / len(ms), 4), "decision_ms_max": round(max(ms), 4)}


def arm_metrics(cases: Sequence[Case], outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """One arm over one or more instances: counts summed, decision times over every replica."""
    per_case = [count(case, out) for case, out in zip(cases, outcomes, strict=True)]
    metrics: dict[str, Any] = {key: sum(c[key] for c in per_case) for key in COUNT_KEYS}
    metrics |= decision_times([ms for out in outcomes for ms in out.decision_ms])
    if any(out.status is not None for out in outcomes):
        metrics["solver_optimal"] = sum(out.status == "OPTIMAL" for out in outcomes)
        metrics["solver_instances"] = len(outcomes)
        metrics["solver_wall_s"] = round(sum(out.wall_s for out in outcomes), 2)
    return metrics
