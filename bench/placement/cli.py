"""Command line, and the function that runs every arm on the same instances of each cluster size."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from bench.placement.arms import HEURISTIC_ARMS, INFERFLEET_BESTFIT, SOLVER, Outcome, run_heuristics
from bench.placement.cluster import Params, make_case
from bench.placement.metrics import arm_metrics, count, violations
from bench.placement.report import add_ratios, describe, misses, row_verdicts, size_targets, table
from bench.placement.solver import solve
from bench.placement.warm import run_warm, warm_table

DEFAULT_SIZES = (16, 128, 1000)
DEFAULT_SEED = 20260517


def run_size(
    size: int,
    seed: int,
    params: Params,
    *,
    instances: int = 1,
    with_solver: bool = False,
    solver_time_limit_s: float = 20.0,
    solver_workers: int = 1,
) -> dict[str, Any]:
    """Every arm on `instances` seeded instances of a `size`-node cluster; metrics summed over them."""
    cases = [make_case(size, seed, params, index=i) for i in range(instances)]
    outcomes: dict[str, list[Outcome]] = {arm: [] for arm in HEURISTIC_ARMS}
    if with_solver:
        outcomes[SOLVER] = []
    for case in cases:
        heuristics = run_heuristics(case)
        for arm, out in heuristics.items():
            outcomes[arm].append(out)
        if with_solver:
            hint = heuristics[INFERFLEET_BESTFIT]
            outcomes[SOLVER].append(
                solve(case, time_limit_s=solver_time_limit_s, workers=solver_workers, hint=hint)
            )
    for arm_outcomes in outcomes.values():
        for case, out in zip(cases, arm_outcomes, strict=True):
            broken = violations(case, out)
            if broken:
                raise AssertionError(f"{case.name}: infeasible placement: {broken[:5]}")
    arms = {arm: arm_metrics(cases, outs) for arm, outs in outcomes.items()}
    add_ratios(arms)
    result: dict[str, Any] = {
        "cluster": describe(cases),
        "arms": arms,
        "targets": size_targets(size, arms),
        "per_instance": [
            {"case": case.name, "arms": {arm: count(case, outs[i]) for arm, outs in outcomes.items()}}
            for i, case in enumerate(cases)
        ]
        if instances > 1
        else [],
    }
    result["warm"] = run_warm(cases, outcomes, seed)
    if with_solver:
        result["solver_time_limit_s"] = solver_time_limit_s
    return result


def run_benchmark(
    sizes: Sequence[int],
    seed: int,
    params: Params,
    *,
    solver_max_nodes: int = 16,
    small_instances: int = 10,
    solver_time_limit_s: float = 20.0,
    solver_workers: int = 1,
) -> dict[str, Any]:
    started = time.monotonic()
    results = {}
    for size in sizes:
        small = size <= solver_max_nodes
        results[str(size)] = run_size(
            size,
            seed,
            params,
            instances=small_instances if small else 1,
            with_solver=small,
            solver_time_limit_s=solver_time_limit_s,
            solver_workers=solver_workers,
        )
    return {
        "params": {
            "seed": seed,
            **asdict(params),
            "solver_max_nodes": solver_max_nodes,
            "small_instances": small_instances,
            "solver_time_limit_s": solver_time_limit_s,
            "solver_workers": solver_workers,
            "wall_seconds": round(time.monotonic() - started, 2),
        },
        "sizes": results,
        "verdicts": row_verdicts(results),
        "misses": misses(results),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.placement",
        description="Place the same seeded arrivals of GPU pods and multi-node groups on fragmented "
        "clusters under inferfleet (groups by its planner; single pods by the binpack profile's "
        "MostAllocated, the default LeastAllocated or its planner), per-pod LeastAllocated and CP-SAT.",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="cluster sizes in nodes")
    ap.add_argument("--demand", type=float, default=Params.demand, help="offered / free GPUs (default 1.3)")
    ap.add_argument(
        "--empty-share", type=float, default=Params.empty_share, help="nodes empty before the arrivals"
    )
    ap.add_argument("--four-gpu-share", type=float, default=Params.four_gpu_share, help="4-GPU nodes")
    ap.add_argument("--solver-max-nodes", type=int, default=16, help="run CP-SAT on sizes up to this")
    ap.add_argument(
        "--small-instances", type=int, default=10, help="seeded instances of each solver size (default 10)"
    )
    ap.add_argument("--solver-time-limit", type=float, default=20.0, help="seconds per instance")
    ap.add_argument("--solver-workers", type=int, default=1, help="CP-SAT workers (1: reproducible)")
    ap.add_argument(
        "--kwok", action="store_true", help="also replay on the local KWOK cluster's H100s, both profiles"
    )
    ap.add_argument("--kwok-instances", type=int, default=4, help="seeded sequences replayed (default 4)")
    ap.add_argument("--kwok-pod-timeout", type=float, default=60.0, help="seconds to wait for each pod")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit("--sizes needs positive node counts")
    params = replace(
        Params(), demand=args.demand, empty_share=args.empty_share, four_gpu_share=args.four_gpu_share
    )
    report = run_benchmark(
        sizes,
        args.seed,
        params,
        solver_max_nodes=args.solver_max_nodes,
        small_instances=args.small_instances,
        solver_time_limit_s=args.solver_time_limit,
        solver_workers=args.solver_workers,
    )
    kwok_report: dict[str, Any] | None = None
    if args.kwok:
        from bench.placement.kwok import kwok_table, run_kwok

        kwok_report = run_kwok(
            args.seed, params, instances=args.kwok_instances, pod_timeout_s=args.kwok_pod_timeout
        )
        report["kwok"] = kwok_report
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(table(report))
    print()
    print(warm_table(report["sizes"]))
    if kwok_report is not None:
        print()
        print(kwok_table(kwok_report))
    return 0
