"""Command line and the one function that runs every policy on the same arrivals."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.autoscale import policies as pol
from bench.autoscale.nodes import StartModel
from bench.autoscale.report import add_ratios, summarize, table, targets, write_png
from bench.autoscale.sim import ROUTINGS, Autoscaler, Plan, RunResult, SimParams, simulate
from bench.autoscale.workload import (
    Workload,
    compress_time,
    limit_duration,
    load_trace,
    scale_load,
    synthetic_bursty,
)
from inferfleet.gateway.config import GatewayConfig
from inferfleet.planning.prefix_routing import LoadBound
from inferfleet.planning.scaling import ScalingPolicy

REPO = Path(__file__).resolve().parents[2]
TRACES = REPO / "traces"  # the shared Azure traces, copied with their attribution
DEFAULT_TRACE = TRACES / "azure-llm-2023-conv.csv"
ORACLE_CAP = 1000
ALL_POLICIES = ("inferfleet", "inferfleet-gateway", "hpa", "keda", "kubeai", "static-peak", "oracle")


@dataclass(frozen=True)
class BenchConfig:
    slo_s: float = 2.0
    min_replicas: int = 1
    max_replicas: int | None = None
    """None: max(peak need + 2, 1.5 x peak need), room for an autoscaler to overshoot."""
    target_queue_depth: float = 4.0
    inferfleet_tick_s: float = pol.INFERFLEET_TICK_S
    policies: tuple[str, ...] = ALL_POLICIES
    learn_starts: bool = True
    """Both inferfleet arms learn the replicas' starts (`planning.startup`) for their lookahead."""


def build_workload(
    trace: Path | None,
    synthetic: str | None,
    load_scale: float,
    time_compression: float,
    duration: float | None,
    seed: int,
) -> Workload:
    if synthetic is not None:
        if synthetic != "bursty":
            raise ValueError(f"unknown synthetic workload {synthetic!r} (known: bursty)")
        w = synthetic_bursty(seed, load_scale=load_scale)
    else:
        w = scale_load(load_trace(trace or DEFAULT_TRACE), load_scale, seed)
    w = compress_time(w, time_compression)
    return limit_duration(w, duration)


def run_oracle(
    workload: Workload, params: SimParams, need: list[tuple[float, int]], initial: int, slo_s: float
) -> RunResult:
    """The oracle foresees how each of its candidate plans ends (bridging gaps of
    pol.ORACLE_BRIDGES_S, taking back draining replicas or not) and keeps the run that meets
    pol.SLO_TARGET with the fewest GPU-hours, else the one with the highest SLO. Taking back saves
    a new replica next to a draining one, but the one taken back is busy with its long requests;
    bridging keeps a replica whose release would not pay."""

    def rank(r: RunResult) -> tuple[bool, float]:
        slo = summarize(r, slo_s, workload.horizon, params.gpus_per_replica)["slo_attainment"]
        return (True, -r.gpu_seconds) if slo >= pol.SLO_TARGET else (False, slo)

    runs = [
        simulate(
            workload, params, pol.oracle_plan(need, params, workload.horizon, bridge, take_back), initial
        )
        for bridge in pol.ORACLE_BRIDGES_S
        for take_back in (True, False)
    ]
    return max(runs, key=rank)


def run_benchmark(
    workload: Workload, params: SimParams, config: BenchConfig = BenchConfig()
) -> tuple[dict[str, Any], dict[str, RunResult]]:
    """Run every policy on `workload`; the report (JSON-ready) and the raw runs."""
    need = pol.oracle_needs(workload, params, config.slo_s, config.min_replicas, cap=ORACLE_CAP)
    peak = pol.peak_replicas(need)
    max_replicas = config.max_replicas or pol.default_max_replicas(peak)
    initial = min(pol.initial_replicas(need, config.min_replicas), max_replicas)
    limits = pol.FleetLimits(config.min_replicas, max_replicas, config.target_queue_depth, params.concurrency)

    makers: dict[str, Any] = {
        "inferfleet": lambda: pol.InferfleetPolicy(
            pol.inferfleet_policy(limits),
            initial,
            interval=config.inferfleet_tick_s,
            learn_starts=config.learn_starts,
        ),
        "inferfleet-gateway": lambda: pol.InferfleetPolicy(
            pol.inferfleet_policy(limits),
            initial,
            interval=config.inferfleet_tick_s,
            gateway=True,
            learn_starts=config.learn_starts,
        ),
        "hpa": lambda: pol.HpaPolicy(limits, initial),
        "keda": lambda: pol.KedaPolicy(limits, initial),
        "kubeai": lambda: pol.KubeAiPolicy(limits),
        "static-peak": lambda: pol.static_plan(need),
    }
    runs: dict[str, RunResult] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for name in config.policies:
        policy: Autoscaler | Plan | None = None
        if name == "oracle":  # the best of its candidate plans
            result = run_oracle(workload, params, need, initial, config.slo_s)
        else:
            policy = makers[name]()
            result = simulate(workload, params, policy, initial_replicas=initial)
        runs[name] = result
        metrics[name] = summarize(result, config.slo_s, workload.horizon, params.gpus_per_replica)
        if isinstance(policy, pol.InferfleetPolicy):
            metrics[name]["decision_reasons"] = dict(sorted(policy.reasons.items()))
            metrics[name]["learned_start_s"] = policy.startup.to_status().dump()
    add_ratios(metrics)
    report = {
        "trace": workload.name,
        "params": {
            "requests": len(workload),
            "horizon_s": round(workload.horizon, 3),
            "slo_s": config.slo_s,
            "min_replicas": config.min_replicas,
            "max_replicas": max_replicas,
            "peak_need": peak,
            "initial_replicas": initial,
            "target_queue_depth": config.target_queue_depth,
            "inferfleet_tick_s": config.inferfleet_tick_s,
            "inferfleet_policy": _flat_policy(pol.inferfleet_policy(limits)),
            **asdict(params),
        },
        "policies": metrics,
        "targets": targets(metrics),
        "targets_gateway": targets(metrics, arm="inferfleet-gateway"),
    }
    return report, runs


def build_start_model(
    cache: str | None, prefetch_nodes: int = 0, download_mb_per_s: float = 200.0, model_gb: float = 16.0
) -> StartModel | None:
    """The node model for `--weights-cache off|on`; None (no flag): the uniform cold start."""
    if cache is None:
        return None
    return StartModel(
        cache=cache == "on",
        prefetch_nodes=prefetch_nodes,
        download_mb_per_s=download_mb_per_s,
        model_gb=model_gb,
    )


def _flat_policy(policy: ScalingPolicy) -> dict[str, Any]:
    """The spec's settings and the tuning constants in one flat dict, as reports always showed."""
    spec = {k: v for k, v in asdict(policy).items() if k != "tuning"}
    return spec | asdict(policy.tuning)


def _add_gateway_arguments(ap: argparse.ArgumentParser) -> None:
    """What the gateway in front of the fleet does: its queue bounds and its routing."""
    ap.add_argument(
        "--queue-timeout",
        type=float,
        help="the gateway's queueTimeoutSeconds: a request waiting longer is refused (default: none)",
    )
    ap.add_argument(
        "--max-queued", type=int, help="the gateway's maxQueuedRequests: 429 beyond it (default: none)"
    )
    ap.add_argument("--routing", choices=ROUTINGS, default="least-load", help="how the fleet routes requests")
    ap.add_argument(
        "--kv-capacity", type=int, default=SimParams.kv_capacity_tokens, help="KV-cache tokens per replica"
    )
    ap.add_argument(
        "--prefix-load-bound",
        type=float,
        default=GatewayConfig.prefix_load_bound,
        help="with --routing prefix: the gateway's prefixLoadBound (0-10)",
    )
    ap.add_argument(
        "--prefix-load-slack",
        type=int,
        default=GatewayConfig.prefix_load_slack,
        help="with --routing prefix: the gateway's prefixLoadSlack (0-1024)",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.autoscale",
        description="Replay an LLM request trace through a simulated GPU fleet under inferfleet's "
        "autoscaling policy (on engine counters, and on its gateway's signals) and baselines "
        "(HPA, KEDA, KubeAI, static peak, oracle).",
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--trace", type=Path, help=f"Azure-format CSV (default {DEFAULT_TRACE})")
    src.add_argument("--synthetic", choices=["bursty"], help="generate a seeded synthetic trace instead")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--load-scale", type=float, default=1.0, help="multiply the arrival rate (default 1)")
    ap.add_argument("--time-compression", type=float, default=1.0, help="replay this many times faster")
    ap.add_argument("--duration", type=float, help="only the first SECONDS of the (compressed) trace")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slo", type=float, default=2.0, help="queue-wait SLO in seconds (default 2)")
    ap.add_argument("--cold-start-min", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--cold-start-max", type=float, default=300.0, help="seconds (default 300)")
    ap.add_argument(
        "--weights-cache",
        choices=["off", "on"],
        help="draw each start by its node's state (image pull + download + load; warm: load only) "
        "without or with the node weights cache (default: neither, U(cold-start-min, max))",
    )
    ap.add_argument("--prefetch-nodes", type=int, default=0, help="with --weights-cache on: warm nodes")
    ap.add_argument(
        "--download-mb-per-s", type=float, default=StartModel.download_mb_per_s, help="model store to node"
    )
    ap.add_argument("--model-gb", type=float, default=StartModel.model_gb, help="the weights' size")
    ap.add_argument(
        "--constant-lookahead", action="store_true", help="inferfleet does not learn starts (as before)"
    )
    ap.add_argument("--concurrency", type=int, default=32, help="max concurrent requests per replica")
    ap.add_argument("--gpus-per-replica", type=int, default=1)
    ap.add_argument("--min-replicas", type=int, default=1)
    ap.add_argument("--max-replicas", type=int, help="default: max(peak+2, 1.5 x peak need)")
    ap.add_argument("--target-queue-depth", type=float, default=4.0, help="waiting requests per replica")
    ap.add_argument("--tick", type=float, default=pol.INFERFLEET_TICK_S, help="inferfleet's tick (s)")
    ap.add_argument("--scrape-interval", type=float, default=15.0, help="Prometheus scrape interval (s)")
    ap.add_argument("--scrape-lag", type=float, default=0.0, help="extra staleness of what autoscalers see")
    _add_gateway_arguments(ap)
    ap.add_argument("--policies", default=",".join(ALL_POLICIES), help="comma-separated subset")
    ap.add_argument(
        "--png", type=Path, help="where to write the plot (default build/bench-autoscale-<trace>.png)"
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cold_start_max < args.cold_start_min:
        raise SystemExit("--cold-start-max must be >= --cold-start-min")
    chosen = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    unknown = [p for p in chosen if p not in ALL_POLICIES]
    if unknown:
        raise SystemExit(f"unknown policies {unknown}; known: {', '.join(ALL_POLICIES)}")
    started = time.monotonic()
    workload = build_workload(
        args.trace, args.synthetic, args.load_scale, args.time_compression, args.duration, args.seed
    )
    params = SimParams(
        concurrency=args.concurrency,
        cold_start_min=args.cold_start_min,
        cold_start_max=args.cold_start_max,
        scrape_interval=args.scrape_interval,
        scrape_lag=args.scrape_lag,
        gpus_per_replica=args.gpus_per_replica,
        seed=args.seed,
        queue_timeout_s=args.queue_timeout,
        max_queued=args.max_queued,
        routing=args.routing,
        kv_capacity_tokens=args.kv_capacity,
        prefix_load=LoadBound(args.prefix_load_bound, args.prefix_load_slack),
        starts=build_start_model(
            args.weights_cache, args.prefetch_nodes, args.download_mb_per_s, args.model_gb
        ),
    )
    config = BenchConfig(
        slo_s=args.slo,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        target_queue_depth=args.target_queue_depth,
        inferfleet_tick_s=args.tick,
        policies=chosen,
        learn_starts=not args.constant_lookahead,
    )
    report, runs = run_benchmark(workload, params, config)
    report["params"]["load_scale"] = args.load_scale
    report["params"]["time_compression"] = args.time_compression
    report["params"]["source"] = (
        f"synthetic:{args.synthetic}" if args.synthetic else str(args.trace or DEFAULT_TRACE)
    )
    report["params"]["wall_seconds"] = round(time.monotonic() - started, 2)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(table(report))
    stem = Path(workload.name).stem
    png = args.png or REPO / "build" / f"bench-autoscale-{stem}.png"
    if write_png(report, {k: v.timeline for k, v in runs.items()}, png):
        print(f"\nplot: {png}")
    else:
        print("\n(no plot: matplotlib is not importable in this environment)")
    return 0
