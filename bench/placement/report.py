"""Ratios against the solver and the least-allocated baseline, the issue's targets, and the table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.placement.arms import (
    INFERFLEET,
    INFERFLEET_BESTFIT,
    INFERFLEET_MOSTALLOCATED,
    LEAST_ALLOCATED,
    SOLVER,
)
from bench.placement.cluster import Case

PLACED_VS_SOLVER_MIN = 0.95
STRANDED_VS_LA_MAX = 0.6
DECISION_MS_MAX = 100.0
DECISION_TARGET_NODES = 1000
TARGET_ARMS = (INFERFLEET_MOSTALLOCATED, INFERFLEET, INFERFLEET_BESTFIT)
"""The rows the targets are checked on; the first is the one they are judged on."""
ROLES = {
    INFERFLEET_MOSTALLOCATED: "the product with the binpack profile; the targets are judged on this row",
    INFERFLEET: "the product with the default scheduler, no profile",
    INFERFLEET_BESTFIT: "not the product: single pods by plan_group_placement",
}
TARGET_KEYS = (
    "partial_groups_eq_0",
    "placed_ge_0.95x_solver",
    "stranded_le_0.6x_least_allocated",
    "decision_lt_100ms_per_replica_at_1000_nodes",
)


def describe(cases: Sequence[Case]) -> dict[str, Any]:
    """The instances of one size, summed: cluster, fragmentation and the arrivals offered."""
    gpus = sum(c.cluster.gpus for c in cases)
    free = sum(sum(c.cluster.free().values()) for c in cases)
    arrivals = [a for c in cases for a in c.arrivals]
    singles = Counter(a.gpus_per_pod for a in arrivals if not a.is_group)
    groups = Counter(a.pods for a in arrivals if a.is_group)
    offered = sum(a.gpus for a in arrivals)
    return {
        "instances": len(cases),
        "nodes": sum(len(c.cluster.nodes) for c in cases),
        "racks": sum(c.cluster.racks for c in cases),
        "four_gpu_nodes": sum(1 for c in cases for n in c.cluster.nodes if n.gpus == 4),
        "gpus": gpus,
        "pre_bound_pods": sum(len(c.cluster.prebound) for c in cases),
        "pre_taken_gpus": gpus - free,
        "free_gpus": free,
        "replicas": len(arrivals),
        "singles_by_gpus": {str(k): singles[k] for k in sorted(singles)},
        "groups_by_pods": {f"{k}x8": groups[k] for k in sorted(groups)},
        "gpus_offered": offered,
        "offered_vs_free": round(offered / free, 3) if free else None,
    }


def ratio(a: float, b: float) -> float | None:
    if b == 0:
        return None if a != 0 else 1.0
    return round(a / b, 3)


def add_ratios(arms: dict[str, dict[str, Any]]) -> None:
    solver, la = arms.get(SOLVER), arms.get(LEAST_ALLOCATED)
    for m in arms.values():
        m["placed_vs_solver"] = ratio(m["replicas_placed"], solver["replicas_placed"]) if solver else None
        m["stranded_vs_least_allocated"] = ratio(m["stranded_gpus"], la["stranded_gpus"]) if la else None


def _check(applies: bool, holds: bool, **numbers: Any) -> dict[str, Any]:
    return {"applies": applies, "holds": holds if applies else None, **numbers}


def arm_targets(arm: str, nodes: int, arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's four targets for one arm at one cluster size; `applies` False where not measured."""
    m, solver, la = arms[arm], arms.get(SOLVER), arms.get(LEAST_ALLOCATED)
    return {
        "partial_groups_eq_0": _check(True, m["partial_groups"] == 0, value=m["partial_groups"]),
        "placed_ge_0.95x_solver": _check(
            solver is not None,
            solver is not None and m["replicas_placed"] >= PLACED_VS_SOLVER_MIN * solver["replicas_placed"],
            ratio=m["placed_vs_solver"],
        ),
        "stranded_le_0.6x_least_allocated": _check(
            la is not None and arm != LEAST_ALLOCATED,
            la is not None and m["stranded_gpus"] <= STRANDED_VS_LA_MAX * la["stranded_gpus"],
            ratio=m["stranded_vs_least_allocated"],
            stranded=m["stranded_gpus"],
        ),
        "decision_lt_100ms_per_replica_at_1000_nodes": _check(
            nodes >= DECISION_TARGET_NODES and m["decision_ms_max"] is not None,
            (m["decision_ms_max"] or 0) < DECISION_MS_MAX,
            max_ms=m["decision_ms_max"],
            mean_ms=m["decision_ms_mean"],
        ),
    }


def size_targets(nodes: int, arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {arm: arm_targets(arm, nodes, arms) for arm in arms if arm != SOLVER}


def misses(sizes: dict[str, dict[str, Any]]) -> list[str]:
    """Every target that applies to an inferfleet row and does not hold, as 'size nodes arm target'."""
    out = []
    for size, s in sizes.items():
        for arm in TARGET_ARMS:
            for key, t in s["targets"].get(arm, {}).items():
                if t["applies"] and not t["holds"]:
                    out.append(f"{size} nodes {arm} {key}")
    return out


_SHOWN = {
    "partial_groups_eq_0": ("value", "{}"),
    "placed_ge_0.95x_solver": ("ratio", "{:.3f}x"),
    "stranded_le_0.6x_least_allocated": ("ratio", "{:.2f}x"),
    "decision_lt_100ms_per_replica_at_1000_nodes": ("max_ms", "{:.1f} ms max"),
}


def row_verdicts(sizes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per inferfleet row and target: holds at every size it applies to (None: applies nowhere),
    and the number behind it per size."""
    out: dict[str, dict[str, Any]] = {}
    for arm in TARGET_ARMS:
        row: dict[str, Any] = {"role": ROLES[arm]}
        for key in TARGET_KEYS:
            applied = {
                size: s["targets"][arm][key] for size, s in sizes.items() if s["targets"][arm][key]["applies"]
            }
            field, _ = _SHOWN[key]
            row[key] = {
                "holds": all(t["holds"] for t in applied.values()) if applied else None,
                "by_size": {size: t[field] for size, t in applied.items()},
            }
        out[arm] = row
    return out


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _verdict(t: dict[str, Any]) -> str:
    return "-" if not t["applies"] else ("PASS" if t["holds"] else "MISS")


ARM_WIDTH = 24
HEADER = (
    f"{'arm':<{ARM_WIDTH}} {'placed':>6} {'single':>6} {'groups':>6} {'partial':>7} {'serving':>7} "
    f"{'stranded (held+free)':>20} {'decide ms mean/max':>18} {'vs solver':>9} {'vs LA':>6} | "
    f"{'partial=0':>9} {'>=.95 solv':>10} {'<=.6 LA':>7} {'<100 ms':>7}"
)


def size_table(nodes: int, s: dict[str, Any]) -> list[str]:
    d = s["cluster"]
    inst = f" x {d['instances']} instances (summed)" if d["instances"] > 1 else ""
    singles = "/".join(f"{v}" for v in d["singles_by_gpus"].values())
    groups = "/".join(f"{v}" for v in d["groups_by_pods"].values())
    lines = [
        f"== {nodes} nodes{inst}: {d['racks']} racks, {d['gpus']} GPUs ({d['four_gpu_nodes']} 4-GPU nodes), "
        f"{d['pre_taken_gpus']} taken by {d['pre_bound_pods']} pods before, {d['free_gpus']} free",
        f"   arrivals: {d['replicas']} replicas (single pods of {'/'.join(d['singles_by_gpus'])} GPUs: "
        f"{singles}; groups of {'/'.join(d['groups_by_pods'])}: {groups}) asking {d['gpus_offered']} GPUs "
        f"= {d['offered_vs_free']}x free",
        HEADER,
    ]
    for arm, m in s["arms"].items():
        t = s["targets"].get(arm)
        verdicts = " ".join(
            f"{_verdict(t[k]) if t else '-':>{w}}" for k, w in zip(TARGET_KEYS, (9, 10, 7, 7), strict=True)
        )
        stranded = f"{m['stranded_gpus']} ({m['gpus_held_by_partial_groups']}+{m['stranded_free_gpus']})"
        decide = (
            f"{_fmt(m['decision_ms_mean'], '.2f')}/{_fmt(m['decision_ms_max'], '.2f')}"
            if arm != SOLVER
            else f"{m['solver_wall_s']:.1f} s total"
        )
        lines.append(
            f"{arm:<{ARM_WIDTH}} {m['replicas_placed']:>6} {m['singles_placed']:>6} {m['groups_placed']:>6} "
            f"{m['partial_groups']:>7} {m['gpus_serving']:>7} {stranded:>20} {decide:>18} "
            f"{_fmt(m['placed_vs_solver'], '.3f', 'x'):>9} "
            f"{_fmt(m['stranded_vs_least_allocated'], '.2f', 'x'):>6} | {verdicts}"
        )
    solver = s["arms"].get(SOLVER)
    if solver:
        lines.append(
            f"   solver: optimality proven in {solver['solver_optimal']}/{solver['solver_instances']} "
            f"instances (time limit {s['solver_time_limit_s']:.0f} s each)"
        )
    return lines


def _summary(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    labels = dict(zip(TARGET_KEYS, ("partial=0", ">=.95 solver", "<=.6 LA", "<100 ms"), strict=True))
    lines = ["targets per row (PASS: holds at every size it applies to; the numbers per size):"]
    for arm, row in verdicts.items():
        parts = []
        for key in TARGET_KEYS:
            v = row[key]
            verdict = "-" if v["holds"] is None else ("PASS" if v["holds"] else "MISS")
            shown = ", ".join(
                f"{size}: {'-' if x is None else _SHOWN[key][1].format(x)}"
                for size, x in v["by_size"].items()
            )
            parts.append(f"{labels[key]} {verdict}" + (f" ({shown})" if shown else ""))
        lines += [f"  {arm} = {row['role']}:", f"    {'; '.join(parts)}"]
    return lines


def table(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"bench/placement seed {p['seed']}: demand {p['demand']}x free GPUs, {p['empty_share']:.0%} of "
        f"nodes empty before, racks of {p['rack_nodes'][0]}-{p['rack_nodes'][1]} nodes; groups are 2-4 pods "
        "x 8 GPUs in one rack",
        "placed = whole replicas (single pods + groups); serving = their GPUs; stranded = GPUs of partial "
        "groups + free GPUs below the smallest refused request",
        "rows (groups in every inferfleet row: plan_group_placement, pinned by required node affinity):",
        f"  {INFERFLEET_MOSTALLOCATED} = THE PRODUCT WITH THE BINPACK PROFILE "
        "(inferfleet run --scheduler-name inferfleet-binpack): single pods by the kube-scheduler's "
        "NodeResourcesFit MostAllocated on nvidia.com/gpu; the targets are judged on this row",
        f"  {INFERFLEET} = the product without the profile: single pods by the default scheduler "
        "(LeastAllocated)",
        f"  {INFERFLEET_BESTFIT} = not the product: single pods by plan_group_placement(pods=1)",
        f"  {LEAST_ALLOCATED} = per-pod default scheduler, groups as pods with rack affinity; "
        f"{SOLVER} = CP-SAT, offline",
    ]
    for size, s in report["sizes"].items():
        lines += ["", *size_table(int(size), s)]
    lines += ["", *_summary(report["verdicts"]), ""]
    judged = report["verdicts"][INFERFLEET_MOSTALLOCATED]
    held = [k for k in TARGET_KEYS if judged[k]["holds"] is True]
    failed = [k for k in TARGET_KEYS if judged[k]["holds"] is False]
    unmeasured = len(TARGET_KEYS) - len(held) - len(failed)
    verdict = f"{len(held)} of {len(TARGET_KEYS)} targets hold"
    if failed:
        verdict += f", {len(failed)} MISSED: {', '.join(failed)}"
    if unmeasured:
        verdict += f", {unmeasured} not measured at these sizes"
    lines.append(f"the product with the binpack profile ({INFERFLEET_MOSTALLOCATED}): {verdict}")
    missed = report["misses"]
    if missed:
        lines.append(f"TARGETS MISSED on the inferfleet rows ({len(missed)}):")
        lines += [f"  MISS {m} ({ROLES[m.split()[2]]})" for m in missed]
    else:
        lines.append("all targets that apply to the inferfleet rows hold")
    lines.append(f"wall time {p['wall_seconds']:.1f} s")
    return "\n".join(lines)
