"""Per-tick output of the inferfleet arm: what the policy saw and did, tick by tick.

`python -m bench.autoscale.ticks [--trace FILE | --synthetic bursty] [--load-scale F] [--seed S]
[--from SECONDS] [--to SECONDS] [--gateway] [--weights-cache off|on] [--prefetch-nodes N]`
replays the workload as the benchmark does (same arrivals, cold starts, warm start) with the
inferfleet policy alone and prints one line per tick: time, the sample (waiting, running,
completion rate, KV usage), the fleet (current, ready, starting), the expected start passed to
the policy, the decision and its message; and, at the end, SLO attainment and GPU-hours, and the
SLO per minute inside the range. It is how a miss is read before the policy is changed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.autoscale import policies as pol
from bench.autoscale.cli import ORACLE_CAP, build_start_model, build_workload
from bench.autoscale.report import summarize
from bench.autoscale.sim import Observation, SimParams, simulate
from inferfleet.planning.scaling import compute_scaling_decision


@dataclass(frozen=True)
class Tick:
    now: float
    waiting: float | None
    running: float | None
    completion_rate: float | None
    kv: float | None
    current: int
    ready: int
    expected_start: float | None
    replicas: int
    reason: str
    message: str


class TracingPolicy(pol.InferfleetPolicy):
    """The benchmark's inferfleet arm, recording every decision."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ticks: list[Tick] = []

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        sample = self.sample(obs)
        decision, self.state = compute_scaling_decision(
            sample, self.policy, current, ready, self.state, now, self.expected_start
        )
        self.ticks.append(
            Tick(
                now,
                sample.waiting,
                sample.running,
                sample.completion_rate,
                sample.kv_cache_usage,
                current,
                ready,
                self.expected_start,
                decision.replicas,
                decision.reason,
                decision.message,
            )
        )
        return decision.replicas


def _f(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def render_tick(t: Tick) -> str:
    arrow = f"{t.current}->{t.replicas}" if t.replicas != t.current else f"{t.current}"
    return (
        f"{t.now:7.0f} W={_f(t.waiting):>5} R={_f(t.running):>4} X={_f(t.completion_rate, '.1f'):>5} "
        f"kv={_f(t.kv, '.2f'):>4} ready={t.ready:>2} start~{_f(t.expected_start):>4}s {arrow:>6} "
        f"{t.reason}: {t.message}"
    )


def run_ticks(
    args: argparse.Namespace,
) -> tuple[TracingPolicy, dict[str, Any], Sequence[float], list[float]]:
    workload = build_workload(args.trace, args.synthetic, args.load_scale, 1.0, None, args.seed)
    params = SimParams(
        seed=args.seed,
        starts=build_start_model(args.weights_cache, args.prefetch_nodes),
        routing=args.routing,
    )
    need = pol.oracle_needs(workload, params, args.slo, 1, cap=ORACLE_CAP)
    max_replicas = pol.default_max_replicas(pol.peak_replicas(need))
    initial = min(pol.initial_replicas(need, 1), max_replicas)
    limits = pol.FleetLimits(1, max_replicas, 4.0, params.concurrency)
    policy = TracingPolicy(pol.inferfleet_policy(limits), initial, gateway=args.gateway)
    result = simulate(workload, params, policy, initial_replicas=initial)
    return policy, summarize(result, args.slo, workload.horizon, 1), workload.arrivals, result.waits


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscale.ticks", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--trace", type=Path)
    src.add_argument("--synthetic", choices=["bursty"])
    ap.add_argument("--load-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slo", type=float, default=2.0)
    ap.add_argument("--from", dest="start", type=float, default=0.0)
    ap.add_argument("--to", dest="end", type=float, default=float("inf"))
    ap.add_argument("--gateway", action="store_true", help="the inferfleet-gateway arm")
    ap.add_argument("--weights-cache", choices=["off", "on"])
    ap.add_argument("--prefetch-nodes", type=int, default=0, help="with --weights-cache on: warm nodes")
    ap.add_argument("--routing", default="least-load")
    args = ap.parse_args(argv)
    policy, metrics, arrivals, waits = run_ticks(args)
    for t in policy.ticks:
        if args.start <= t.now <= args.end:
            print(render_tick(t))
    print(
        f"\nSLO {metrics['slo_attainment']:.4f}, GPU-h {metrics['gpu_hours']:.2f}, "
        f"reversals {metrics['reversals']}, peak {metrics['peak_replicas']}"
    )
    minutes: dict[int, list[int]] = {}
    for a, w in zip(arrivals, waits, strict=True):
        if args.start <= a <= args.end:
            m = minutes.setdefault(int(a // 60), [0, 0])
            m[0] += 1
            m[1] += w <= args.slo + 1e-9
    print(
        "minute: requests, within SLO: "
        + ", ".join(f"{k}: {n}/{ok}" for k, (n, ok) in sorted(minutes.items()))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
