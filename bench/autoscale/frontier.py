"""What any policy could reach on a workload: the bounds behind the targets of issue 5.

`python -m bench.autoscale.frontier [--trace FILE | --synthetic bursty] [--load-scale F] [--json]`
replays the workload of the benchmark (same arrivals, engine model and cold starts) through

* fixed fleets of 1 .. max replicas, ready from the start and never changed: the price of
  absorbing every burst by provisioning for it in advance;
* a reactive upper bound: a policy that requests `max_replicas` at the first tick that sees a
  waiting request and never scales down. No policy that reacts to what Prometheus shows gets
  capacity sooner, so none reaches a higher SLO without holding capacity before the load
  shows (it may still beat it by scaling before a queue forms, on the arrival rate). It is a
  bound on SLO at any cost, not at a policy's GPU-hours: the replicas it buys for the first
  queue are there for every later burst (on bursty traffic a queue at minute 1.5 buys the
  capacity that serves the flash crowd at minute 13);
* a reactive oracle (`ReactiveOracle`), with 0..REACTIVE_HEADROOM extra replicas: it knows,
  at each tick, exactly how many replicas the load needs NOW (the oracle's need of the current
  10 s window) and requests them at once, with the same cold starts as every policy (the k-th
  replica requested draws the k-th start); it releases a replica only when, with hindsight, no
  need for it comes back within one expected cold start. That release is foresight a policy
  does not have (it keeps exactly the replicas the next minutes will need), so the
  frontier's `reactive_present` runs the same oracle releasing as a scale-down window does
  (a replica stays while the need for it was seen within the last cold start): perfect
  knowledge of the present, none of the future. No policy that reacts to the load sizes better,
  so its (GPU-hours, SLO) curve is where a reactive policy can be: where every point of it
  lies below the fixed-fleet frontier, the frontier is out of reach without holding capacity
  for load that has not shown yet (evidence, not proof: a trend can scale before the need);
* the oracle, for the GPU-hour ratios.

It prints, per fleet, the SLO attainment and the GPU-hours as a ratio to the oracle's, and
whether any fixed fleet reaches the SLO target within the GPU-hour target.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.autoscale import policies as pol
from bench.autoscale.cli import ORACLE_CAP, build_workload, run_oracle
from bench.autoscale.report import summarize
from bench.autoscale.sim import Observation, Plan, SimParams, simulate
from bench.autoscale.workload import Workload

SLO_TARGET = pol.SLO_TARGET
GPU_TARGET_VS_ORACLE = 1.25
REACTIVE_HEADROOM = 3
"""The reactive oracle is run with 0..this many replicas above the need."""


@dataclass
class JumpToMax:
    """Requests `max_replicas` at the first tick that sees a waiting request; never scales down."""

    max_replicas: int
    initial: int
    name: str = "reactive-max"
    interval: float = pol.INFERFLEET_TICK_S
    uses_prometheus: bool = True

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        if (obs.waiting or 0) > 0 or current == self.max_replicas:
            return self.max_replicas
        return max(current, self.initial)


@dataclass
class ReactiveOracle:
    """Scales to the load's present need (+ `headroom`) at every tick; keeps a replica while
    the need comes back within `bridge_s` (hindsight: the only foresight it has). With
    `hindsight` False it keeps a replica while the need was seen within the last `bridge_s`
    instead, as a scale-down window does: no foresight at all beyond the present window."""

    need: list[tuple[float, int]]
    headroom: int
    max_replicas: int
    bridge_s: float
    hindsight: bool = True
    name: str = "reactive-oracle"
    interval: float = pol.INFERFLEET_TICK_S
    uses_prometheus: bool = False

    def need_at(self, t: float) -> int:
        k = bisect.bisect_right([s for s, _ in self.need], t) - 1
        return self.need[max(k, 0)][1]

    def need_within(self, t0: float, t1: float) -> int:
        inside = [r for s, r in self.need if t0 < s <= t1]
        return max([self.need_at(t0), *inside])

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        want = min(self.need_at(now) + self.headroom, self.max_replicas)
        if want >= current:
            return want
        seen = (
            self.need_within(now, now + self.bridge_s)
            if self.hindsight
            else self.need_within(now - self.bridge_s, now)
        )
        keep = min(seen + self.headroom, self.max_replicas)
        return max(want, min(current, keep))


def expected_cold_start(params: SimParams) -> float:
    """The mean start a replica requested now takes: uniform, or a new node's (the worst case)."""
    m = params.starts
    if m is None:
        return (params.cold_start_min + params.cold_start_max) / 2
    pull = (m.image_pull_min_s + m.image_pull_max_s) / 2
    return pull + m.download_s + (m.load_min_s + m.load_max_s) / 2


def compute_frontier(
    workload: Workload, params: SimParams, slo_s: float = 2.0, min_replicas: int = 1
) -> dict[str, Any]:
    need = pol.oracle_needs(workload, params, slo_s, min_replicas, cap=ORACLE_CAP)
    peak = pol.peak_replicas(need)
    max_replicas = pol.default_max_replicas(peak)
    initial = pol.initial_replicas(need, min_replicas)

    def run(policy: Any, start: int) -> dict[str, Any]:
        result = simulate(workload, params, policy, initial_replicas=start)
        return summarize(result, slo_s, workload.horizon, params.gpus_per_replica)

    oracle = summarize(
        run_oracle(workload, params, need, initial, slo_s), slo_s, workload.horizon, params.gpus_per_replica
    )
    fixed = {n: run(Plan(f"fixed-{n}", initial_ready=n), n) for n in range(1, max_replicas + 1)}
    reactive = run(JumpToMax(max_replicas, initial), initial)
    bridge = expected_cold_start(params)
    reactive_oracle = {
        h: run(ReactiveOracle(need, h, max_replicas, bridge), initial) for h in range(REACTIVE_HEADROOM + 1)
    }
    reactive_present = {
        h: run(ReactiveOracle(need, h, max_replicas, bridge, hindsight=False), initial)
        for h in range(REACTIVE_HEADROOM + 1)
    }

    def ratio(m: dict[str, Any]) -> float:
        return round(m["gpu_hours"] / oracle["gpu_hours"], 3) if oracle["gpu_hours"] else math.inf

    meeting = [n for n, m in fixed.items() if m["slo_attainment"] >= SLO_TARGET]
    cheapest = min(meeting) if meeting else None
    return {
        "trace": workload.name,
        "slo_s": slo_s,
        "max_replicas": max_replicas,
        "initial_replicas": initial,
        "oracle": {**oracle, "gpu_hours_vs_oracle": 1.0},
        "fixed": {str(n): {**m, "gpu_hours_vs_oracle": ratio(m)} for n, m in fixed.items()},
        "reactive_max": {**reactive, "gpu_hours_vs_oracle": ratio(reactive)},
        "reactive_oracle": {
            str(h): {**m, "gpu_hours_vs_oracle": ratio(m)} for h, m in reactive_oracle.items()
        },
        "reactive_present": {
            str(h): {**m, "gpu_hours_vs_oracle": ratio(m)} for h, m in reactive_present.items()
        },
        "cheapest_fixed_meeting_slo": cheapest,
        "fixed_meets_both_targets": cheapest is not None and ratio(fixed[cheapest]) <= GPU_TARGET_VS_ORACLE,
        "reactive_max_meets_slo": reactive["slo_attainment"] >= SLO_TARGET,
    }


def render(frontier: dict[str, Any]) -> str:
    lines = [
        f"{frontier['trace']}: SLO {frontier['slo_s']} s queue wait, oracle SLO "
        f"{frontier['oracle']['slo_attainment']:.4f} at {frontier['oracle']['gpu_hours']:.2f} GPU-h",
        "",
        f"{'fleet':<16} {'SLO':>8} {'GPU-h':>8} {'vs oracle':>10}",
    ]
    rows = [(f"fixed {n}", m) for n, m in frontier["fixed"].items()] + [
        ("reactive max", frontier["reactive_max"])
    ]
    rows += [(f"react-oracle+{h}", m) for h, m in frontier.get("reactive_oracle", {}).items()]
    rows += [(f"react-present+{h}", m) for h, m in frontier.get("reactive_present", {}).items()]
    for name, m in rows:
        lines.append(
            f"{name:<16} {m['slo_attainment']:>8.4f} {m['gpu_hours']:>8.2f} {m['gpu_hours_vs_oracle']:>9.3f}x"
        )
    cheapest = frontier["cheapest_fixed_meeting_slo"]
    lines.append("")
    if cheapest is None:
        lines.append(f"no fixed fleet up to {frontier['max_replicas']} reaches SLO >= {SLO_TARGET}")
    else:
        m = frontier["fixed"][str(cheapest)]
        lines.append(
            f"cheapest fixed fleet with SLO >= {SLO_TARGET}: {cheapest} replicas, "
            f"{m['gpu_hours_vs_oracle']:.3f}x the oracle's GPU-hours "
            f"({'within' if frontier['fixed_meets_both_targets'] else 'over'} {GPU_TARGET_VS_ORACLE}x)"
        )
    r = frontier["reactive_max"]
    lines.append(
        f"reactive bound (max replicas at the first queue): SLO {r['slo_attainment']:.4f} "
        f"({'meets' if frontier['reactive_max_meets_slo'] else 'below'} {SLO_TARGET}) at "
        f"{r['gpu_hours_vs_oracle']:.3f}x the oracle"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.autoscale.frontier", description=(__doc__ or "").split("\n")[0]
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--trace", type=Path)
    src.add_argument("--synthetic", choices=["bursty"])
    ap.add_argument("--load-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slo", type=float, default=2.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    workload = build_workload(args.trace, args.synthetic, args.load_scale, 1.0, None, args.seed)
    frontier = compute_frontier(workload, SimParams(seed=args.seed), slo_s=args.slo)
    print(json.dumps(frontier, indent=2) if args.json else render(frontier))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
