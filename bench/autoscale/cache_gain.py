"""Issue 17's target: the SLO the node weights cache buys at equal GPU-hours.

`python -m bench.autoscale.cache_gain [--seeds 0,1,2] [--min-replicas 1-8] [--out STEM]` runs
the inferfleet arm on code x10 and bursty x3 (the workloads the issue names) in three start
models: `cache-off`, `cache-on`, and `cache-on` with 2 and with 4 prefetched nodes
(`bench.autoscale.nodes`). One run per start model gives one (GPU-hours, SLO) point, and
two points at different GPU-hours say nothing about "at equal GPU-hours". So each start model
is run at every `minReplicas` from 1 to 8, the reserve a user sets for bursts, which moves
both figures: the start model's curve. Its best SLO within a budget of B GPU-hours is the
highest SLO of the settings that use at most B (no interpolation: a setting is run or not).
The gain of a cached model over cache-off is that best SLO minus cache-off's, averaged over
the budgets where both have a setting (from the larger of their cheapest to the largest of
their dearest), with its lowest and highest value over the same budgets. Writes
bench/autoscale/results/<date>-cache-gain.{json,txt}.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.autoscale.cli import TRACES, BenchConfig, build_start_model, build_workload, run_benchmark
from bench.autoscale.sim import SimParams
from bench.autoscale.sweep import RESULTS, WORKLOADS, run_jobs, save_results

CACHE_WORKLOADS = ("code x10", "bursty x3")
START_MODELS: tuple[tuple[str, str, int], ...] = (
    # label, --weights-cache, prefetched nodes
    ("cache-off", "off", 0),
    ("cache-on", "on", 0),
    ("cache-on prefetch 2", "on", 2),
    ("cache-on prefetch 4", "on", 4),
)
BASELINE = "cache-off"

Point = tuple[float, float]
"""(GPU-hours, SLO attainment) of one setting."""


def compute_best_slo(points: Sequence[Point], budget: float) -> float | None:
    """The highest SLO among the settings using at most `budget` GPU-hours; None if none does."""
    within = [slo for gpu, slo in points if gpu <= budget + 1e-9]
    return max(within) if within else None


def compute_gain(baseline: Sequence[Point], other: Sequence[Point]) -> dict[str, float]:
    """`other`'s best SLO minus `baseline`'s at equal budgets: the mean over the budgets from
    the larger of the two cheapest settings to the dearest one (both best SLOs are step
    functions, so the mean weighs each step by its width), and the lowest and highest gain."""
    low = max(min(g for g, _ in baseline), min(g for g, _ in other))
    high = max(g for g, _ in [*baseline, *other])
    steps = sorted({low, high, *(g for g, _ in [*baseline, *other] if low < g < high)})
    gains = [_best(other, a) - _best(baseline, a) for a in steps]
    widths = [b - a for a, b in itertools.pairwise(steps)]
    mean = sum(g * w for g, w in zip(gains, widths, strict=False)) / sum(widths) if widths else gains[0]
    return {
        "from_gpu_hours": round(low, 3),
        "to_gpu_hours": round(high, 3),
        "mean": round(mean, 4),
        "min": round(min(gains), 4),
        "max": round(max(gains), 4),
    }


def _best(points: Sequence[Point], budget: float) -> float:
    best = compute_best_slo(points, budget)
    assert best is not None, "a budget below every setting"
    return best


def run_point(job: tuple[str, str, float, str, str, int, int, int]) -> dict[str, Any]:
    label, source, scale, routing, starts, prefetch, seed, min_replicas = job
    synthetic = source.split(":", 1)[1] if source.startswith("synthetic:") else None
    workload = build_workload(None if synthetic else TRACES / source, synthetic, scale, 1.0, None, seed)
    params = SimParams(seed=seed, routing=routing, starts=build_start_model(starts, prefetch))
    config = BenchConfig(min_replicas=min_replicas, policies=("inferfleet",))
    m = run_benchmark(workload, params, config)[0]["policies"]["inferfleet"]
    return {
        "workload": label,
        "seed": seed,
        "start_model": next(n for n, c, p in START_MODELS if (c, p) == (starts, prefetch)),
        "min_replicas": min_replicas,
        "gpu_hours": m["gpu_hours"],
        "slo_attainment": m["slo_attainment"],
        "starts_warm": m["starts_warm"],
        "starts_cold": m["starts_cold"],
    }


def compute_curves(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per workload and seed: each start model's points and its gain over cache-off."""
    out = []
    for (workload, seed), group in itertools.groupby(
        sorted(points, key=lambda p: (p["workload"], p["seed"])), key=lambda p: (p["workload"], p["seed"])
    ):
        rows = list(group)
        curves = {
            name: [(p["gpu_hours"], p["slo_attainment"]) for p in rows if p["start_model"] == name]
            for name, _, _ in START_MODELS
        }
        gains = {name: compute_gain(curves[BASELINE], c) for name, c in curves.items() if name != BASELINE}
        default = {p["start_model"]: p for p in rows if p["min_replicas"] == 1}
        out.append({"workload": workload, "seed": seed, "curves": curves, "gains": gains, "default": default})
    return out


def render(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| workload | seed | start model | minReplicas 1 (default): SLO @ GPU-h, warm/cold starts "
        "| curve over minReplicas 1-8: SLO @ GPU-h "
        "| gain over cache-off at equal GPU-h: mean (min, max) over |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, _, _ in START_MODELS:
            d = r["default"][name]
            curve = " ".join(f"{s:.4f}@{g:.2f}" for g, s in r["curves"][name])
            g = r["gains"].get(name)
            gain = (
                "-"
                if g is None
                else f"{g['mean']:+.4f} ({g['min']:+.4f}, {g['max']:+.4f}) over "
                f"{g['from_gpu_hours']:.2f}-{g['to_gpu_hours']:.2f}"
            )
            lines.append(
                f"| {r['workload']} | {r['seed']} | {name} "
                f"| {d['slo_attainment']:.4f} @ {d['gpu_hours']:.2f}, {d['starts_warm']}/{d['starts_cold']} "
                f"| {curve} | {gain} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.autoscale.cache_gain", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--min-replicas", default="1-8", help="the knob's range, FIRST-LAST")
    ap.add_argument("--workers", type=int, default=2, help="processes, at most 2")
    ap.add_argument("--out", type=Path, help="file stem (default results/<date>-cache-gain)")
    args = ap.parse_args(argv)
    first, last = (int(x) for x in args.min_replicas.split("-"))
    jobs = [
        (*w, cache, prefetch, int(seed), m)
        for w in WORKLOADS
        if w[0] in CACHE_WORKLOADS
        for _, cache, prefetch in START_MODELS
        for seed in args.seeds.split(",")
        for m in range(first, last + 1)
    ]
    started = time.monotonic()
    results = compute_curves(run_jobs(run_point, jobs, args.workers))
    stem = args.out or RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-cache-gain"
    save_results(stem, "results", results, render(results), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
