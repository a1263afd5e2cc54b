"""The report's arithmetic and verdict, pure: what an arm's end state says.

Definitions (README): a group is **whole** when all its pods are bound, **half-placed** when some
but not all are; a node the autoscaler added is **unused** when, at the end of the arm, it is
still there and holds no pod of a whole group (a half-placed group's pods serve nothing).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ATOMIC, PLACEHOLDER, KARPENTER = "atomic", "placeholder", "karpenter"
ARMS = (ATOMIC, PLACEHOLDER, KARPENTER)
ARM_TITLES = {
    ATOMIC: "atomic ProvisioningRequests (inferfleet)",
    PLACEHOLDER: "placeholder pods per rank + CA-like stand-in",
    KARPENTER: "placeholder pods per rank + Karpenter 1.14",
}


@dataclass(frozen=True)
class Observation:
    """An arm's end state, as measured."""

    groups: int
    pods_per_group: int
    ready_after: Mapping[int, float]
    """Replica -> seconds from creation ("does not fit") to all its pods Ready; Ready groups only."""
    bound: Mapping[int, Sequence[str]]
    """Replica -> the nodes its pods are bound to at the end."""
    added: Sequence[str]
    """Every node the autoscaler added during the arm."""
    removed: Sequence[str] = ()
    """Added nodes it removed again (empty) during the arm."""
    seconds: float = 0.0


def whole_groups(obs: Observation) -> list[int]:
    return sorted(r for r, nodes in obs.bound.items() if len(nodes) == obs.pods_per_group)


def half_placed_groups(obs: Observation) -> list[int]:
    return sorted(r for r, nodes in obs.bound.items() if 0 < len(nodes) < obs.pods_per_group)


def unused_nodes(obs: Observation) -> list[str]:
    """Added nodes still there at the end with no pod of a whole group on them."""
    serving = {node for r in whole_groups(obs) for node in obs.bound[r]}
    return sorted(n for n in obs.added if n not in set(obs.removed) and n not in serving)


def _finite(value: float) -> float | None:
    return None if value == math.inf else round(value, 1)


def summarise(obs: Observation) -> dict[str, Any]:
    """p50 and max over all groups, a group never Ready counting as never (None)."""
    ready = len(obs.ready_after)
    times = sorted([*obs.ready_after.values(), *[math.inf] * (obs.groups - ready)])
    return {
        "groups": obs.groups,
        "ready": ready,
        "not_ready": obs.groups - ready,
        "p50_s": _finite(statistics.median(times)) if times else None,
        "max_s": _finite(times[-1]) if times else None,
        "ready_after_s": {str(r): round(t, 1) for r, t in sorted(obs.ready_after.items())},
        "nodes_added": len(obs.added),
        "nodes_removed": len(obs.removed),
        "unused_nodes": len(unused_nodes(obs)),
        "unused": unused_nodes(obs),
        "half_placed_groups": len(half_placed_groups(obs)),
        "whole_groups": len(whole_groups(obs)),
        "seconds": round(obs.seconds, 1),
    }


def verdict(arms: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The target: no added node left unused (and no group half-placed) with atomic requests."""
    atomic = arms[ATOMIC]
    met = atomic["unused_nodes"] == 0 and atomic["half_placed_groups"] == 0
    line = f"atomic: {atomic['unused_nodes']} unused node(s), {atomic['half_placed_groups']} half-placed"
    ratios = {}
    for arm in (PLACEHOLDER, KARPENTER):
        if arm in arms:
            line += (
                f"; {arm}: {arms[arm]['unused_nodes']} unused, {arms[arm]['half_placed_groups']} half-placed"
            )
            ratios[arm] = p50_ratio(atomic, arms[arm])
    return {"target": "unused nodes: none for atomic", "met": met, "detail": line, "p50_ratio": ratios}


def p50_ratio(atomic: Mapping[str, Any], baseline: Mapping[str, Any]) -> float | None:
    """Atomic's p50 time to Ready over the baseline's, when both have one (same run, same groups)."""
    if atomic["p50_s"] is None or not baseline["p50_s"]:
        return None
    return round(float(atomic["p50_s"]) / float(baseline["p50_s"]), 2)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def _per_group(summary: Mapping[str, Any]) -> str:
    after = summary["ready_after_s"]
    return ", ".join(_seconds(after.get(str(r))) for r in range(summary["groups"]))


def table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One block per scenario: a row per arm, then the verdict."""
    head = (
        f"{'arm':<48} {'ready':>7} {'p50 s':>7} {'max s':>7} {'added':>6} {'unused':>7} {'half':>5}"
        "  Ready after (s, per group)"
    )
    lines: list[str] = []
    for name, scenario in results.items():
        lines += [f"== {name}: {scenario['what']}", head]
        for arm in ARMS:
            if arm not in scenario["arms"]:
                continue
            s = scenario["arms"][arm]
            lines.append(
                f"{ARM_TITLES[arm]:<48} {s['ready']:>3}/{s['groups']:<3} {_seconds(s['p50_s']):>7} "
                f"{_seconds(s['max_s']):>7} {s['nodes_added']:>6} {s['unused_nodes']:>7} "
                f"{s['half_placed_groups']:>5}  {_per_group(s)}"
            )
        v = scenario["verdict"]
        lines.append(f"   {v['target']}: {'met' if v['met'] else 'MISSED'} ({v['detail']})")
        ratios = [f"{arm} {r:.2f}x" for arm, r in v.get("p50_ratio", {}).items() if r is not None]
        if ratios:
            lines.append(f"   time to Ready p50, atomic / baseline: {', '.join(ratios)}")
        lines.append("")
    return "\n".join(lines)
