"""Issue 16's targets on every workload and seed: one table.

`python -m bench.autoscale.sweep [--seeds 0,1,2] [--workers 2] [--only LABEL,...]` runs the
benchmark (every policy) and the fixed-fleet frontier (`bench.autoscale.frontier`) on each
workload of WORKLOADS at its load scale, seeds 0-2, in at most 2 processes, and writes
bench/autoscale/results/<date>-sweep.{json,txt}. Per run and per inferfleet arm:

* dominates HPA / KEDA: SLO >= theirs AND GPU-hours <= theirs;
* on or above the frontier: its SLO >= the fixed fleets' SLO at its GPU-hours, the frontier
  being linear between consecutive fleet sizes (from the origin below the smallest);
* reaches 0.99 where a fixed fleet does cheaply: wherever some fixed fleet reaches SLO >= 0.99
  at <= 1.25x the oracle's GPU-hours, the arm reaches both too;
* reachable: whether the frontier's SLO at the arm's GPU-hours is at most the reactive bound's
  (`bench.autoscale.frontier`: max replicas at the first queue, never down, at any cost). Where
  it is not, no policy that adds capacity when the queue shows reaches the frontier there: the
  fixed fleets hold capacity before the load that needs it has shown. Where it is, that may be
  at a cost no policy would pay (the bound holds max replicas from the first queue on), so
  also:
* reachable without foresight: whether some point of the frontier's `reactive_present` curve
  (the load's present need known exactly, 0-3 replicas of standing headroom, released as a
  scale-down window releases) lies on or above the frontier at its own GPU-hours. Where none
  does, sizing to the present load with any of those headrooms stays inside the frontier.

After the table, a summary: per target, the runs each arm meets and the runs each headroom of
that present-need sizing meets (scored as the arms are), then every run an arm misses, with the
headrooms that meet that target there ("none": no sizing to the present load does, at 0-3
spare replicas), and per workload the mean SLO below the frontier at each point's GPU-hours
(how near a missed frontier target is). `--rescore FILE.json` scores a saved sweep again and
prints it all, in seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.autoscale.cli import REPO, TRACES, BenchConfig, build_start_model, build_workload, run_benchmark
from bench.autoscale.frontier import GPU_TARGET_VS_ORACLE, SLO_TARGET, compute_frontier
from bench.autoscale.sim import SimParams

WORKLOADS: tuple[tuple[str, str, float, str], ...] = (
    # label, trace file in traces/ or "synthetic:bursty", load scale, routing
    ("conv x5", "azure-llm-2023-conv.csv", 5.0, "least-load"),
    ("code x10", "azure-llm-2023-code.csv", 10.0, "least-load"),
    ("bursty x3", "synthetic:bursty", 3.0, "least-load"),
    ("mooncake x2", "mooncake-2025-conversation.jsonl.gz", 2.0, "least-load"),
    ("mooncake x2 prefix", "mooncake-2025-conversation.jsonl.gz", 2.0, "prefix"),
    ("servegen-r1 x1", "servegen-deepseek-r1-13h.csv.gz", 1.0, "least-load"),
)
ARMS = ("inferfleet", "inferfleet-gateway")
STARTS = ("uniform", "cache-off", "cache-on")
"""How replicas start: U(60, 300) s as before issue 17, or per node state (`bench.autoscale.nodes`)
without and with the node weights cache."""
RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


def compute_dominates(arm: dict[str, Any], other: dict[str, Any]) -> bool:
    return bool(arm["slo_attainment"] >= other["slo_attainment"] and arm["gpu_hours"] <= other["gpu_hours"])


def compute_frontier_slo(fixed: Sequence[tuple[float, float]], gpu_hours: float) -> float:
    """The fixed fleets' SLO at `gpu_hours`: linear between consecutive (GPU-hours, SLO) points
    (sorted by GPU-hours), from (0, 0) below the smallest, flat above the largest."""
    points = [(0.0, 0.0), *sorted(fixed)]
    for (g0, s0), (g1, s1) in itertools.pairwise(points):
        if gpu_hours <= g1:
            return s0 + (s1 - s0) * (gpu_hours - g0) / (g1 - g0) if g1 > g0 else s1
    return points[-1][1]


def compute_on_frontier(point: dict[str, Any], fixed: Sequence[tuple[float, float]]) -> bool:
    return bool(point["slo_attainment"] >= compute_frontier_slo(fixed, point["gpu_hours"]) - 1e-9)


def compute_below_frontier(point: dict[str, Any], fixed: Sequence[tuple[float, float]]) -> float:
    """How far the point's SLO falls short of the frontier's at its GPU-hours (0 on or above):
    how near a missed frontier target is, which the yes/no verdict does not say."""
    return round(
        max(0.0, compute_frontier_slo(fixed, point["gpu_hours"]) - float(point["slo_attainment"])), 4
    )


def compute_cheap_target(
    point: dict[str, Any], fixed: Sequence[tuple[float, float]], oracle_gpu_hours: float
) -> dict[str, Any]:
    """Wherever a fixed fleet reaches SLO >= 0.99 within 1.25x the oracle's GPU-hours, so must `point`."""
    budget = GPU_TARGET_VS_ORACLE * oracle_gpu_hours
    applies = any(s >= SLO_TARGET and g <= budget for g, s in fixed)
    reached = point["slo_attainment"] >= SLO_TARGET and point["gpu_hours"] <= budget
    return {"applies": applies, "holds": (not applies) or reached}


def compute_verdicts(run: dict[str, Any]) -> dict[str, Any]:
    """The targets per inferfleet arm, and per headroom of the present-need sizing, from a run
    as the sweep saves it (so a saved sweep is scored again with `--rescore`)."""
    fixed = [(g, s) for g, s in run["fixed"].values()]
    policies = run["policies"]
    oracle = policies["oracle"]["gpu_hours"]
    reactive_max_slo = run["reactive_max"][1]
    present = {h: _point(g, s) for h, (g, s) in run["reactive_present"].items()}
    out: dict[str, Any] = {}
    for arm in ARMS:
        frontier_slo = compute_frontier_slo(fixed, policies[arm]["gpu_hours"])
        out[arm] = {
            **compute_targets(policies[arm], policies, fixed, oracle),
            "frontier_slo_at_its_gpu_hours": round(frontier_slo, 4),
            "reachable": frontier_slo <= reactive_max_slo + 1e-9,
            "reachable_without_foresight": any(compute_on_frontier(m, fixed) for m in present.values()),
        }
    out["present_need"] = {h: compute_targets(m, policies, fixed, oracle) for h, m in present.items()}
    return out


def compute_targets(
    point: dict[str, Any], policies: dict[str, Any], fixed: Sequence[tuple[float, float]], oracle: float
) -> dict[str, Any]:
    """Issue 16's three targets for one (GPU-hours, SLO) point of a run."""
    return {
        "dominates_hpa": compute_dominates(point, policies["hpa"]),
        "dominates_keda": compute_dominates(point, policies["keda"]),
        "on_or_above_frontier": compute_on_frontier(point, fixed),
        "below_frontier": compute_below_frontier(point, fixed),
        "cheap_099": compute_cheap_target(point, fixed, oracle),
    }


def _point(gpu_hours: float, slo: float) -> dict[str, float]:
    return {"gpu_hours": gpu_hours, "slo_attainment": slo}


def run_one(job: tuple[str, str, float, str, str, int, int]) -> dict[str, Any]:
    label, source, scale, routing, starts, prefetch, seed = job
    started = time.monotonic()
    synthetic = source.split(":", 1)[1] if source.startswith("synthetic:") else None
    trace = None if synthetic else TRACES / source
    workload = build_workload(trace, synthetic, scale, 1.0, None, seed)
    model = None if starts == "uniform" else build_start_model(starts.removeprefix("cache-"), prefetch)
    params = SimParams(seed=seed, routing=routing, starts=model)
    report, _ = run_benchmark(workload, params, BenchConfig())
    frontier = compute_frontier(workload, params)
    keep = (
        "slo_attainment", "gpu_hours", "prefix_hit_rate", "kv_limited_s", "reversals", "peak_replicas",
        "starts_warm", "starts_cold", "median_warm_start_s", "median_cold_start_s",
    )  # fmt: skip
    run: dict[str, Any] = {
        "workload": label,
        "starts": starts if starts != "cache-on" or not prefetch else f"{starts} prefetch {prefetch}",
        "seed": seed,
        "routing": routing,
        "peak_need": report["params"]["peak_need"],
        "policies": {k: {f: m[f] for f in keep} for k, m in report["policies"].items()},
        "fixed": {n: [m["gpu_hours"], m["slo_attainment"]] for n, m in frontier["fixed"].items()},
        "reactive_max": [frontier["reactive_max"]["gpu_hours"], frontier["reactive_max"]["slo_attainment"]],
        "reactive_oracle": {
            h: [m["gpu_hours"], m["slo_attainment"]] for h, m in frontier["reactive_oracle"].items()
        },
        "reactive_present": {
            h: [m["gpu_hours"], m["slo_attainment"]] for h, m in frontier["reactive_present"].items()
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    return {**run, "verdicts": compute_verdicts(run)}


def _mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def render(runs: Sequence[dict[str, Any]]) -> str:
    head = (
        "| workload | starts | seed | peak | SLO inf / gw / HPA / KEDA / oracle "
        "| GPU-h inf / gw / HPA / KEDA / oracle "
        "| hit rate inf | KV-limited s inf / oracle | dominates HPA, KEDA (inf; gw) "
        "| on frontier (inf; gw) | 0.99 cheap (inf; gw) | starts warm/cold, median s (inf) "
        "| reactive bound SLO @ GPU-h; frontier reachable (inf); without foresight |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in runs:
        p, v = r["policies"], r["verdicts"]
        names = ("inferfleet", "inferfleet-gateway", "hpa", "keda", "oracle")
        slo = " / ".join(f"{p[n]['slo_attainment']:.4f}" for n in names)
        gpu = " / ".join(f"{p[n]['gpu_hours']:.2f}" for n in names)
        dom = "; ".join(f"{_mark(v[a]['dominates_hpa'])}, {_mark(v[a]['dominates_keda'])}" for a in ARMS)
        front = "; ".join(
            f"{_mark(v[a]['on_or_above_frontier'])} ({v[a]['frontier_slo_at_its_gpu_hours']:.4f})"
            for a in ARMS
        )
        cheap = "; ".join(
            ("n/a" if not v[a]["cheap_099"]["applies"] else _mark(v[a]["cheap_099"]["holds"])) for a in ARMS
        )
        kv = f"{p['inferfleet']['kv_limited_s']:.0f} / {p['oracle']['kv_limited_s']:.0f}"
        lines.append(
            f"| {r['workload']} | {r.get('starts', 'uniform')} | {r['seed']} | {r['peak_need']} "
            f"| {slo} | {gpu} "
            f"| {p['inferfleet']['prefix_hit_rate']:.3f} | {kv} | {dom} | {front} | {cheap} "
            f"| {_starts(p['inferfleet'])} "
            f"| {r['reactive_max'][1]:.4f} @ {r['reactive_max'][0]:.2f}; "
            f"{_mark(v['inferfleet']['reachable'])}; "
            f"{_mark(v['inferfleet']['reachable_without_foresight'])} |"
        )
    return "\n".join(lines)


TARGETS: tuple[tuple[str, str], ...] = (
    ("dominates", "dominates HPA and KEDA"),
    ("frontier", "on or above the frontier"),
    ("both", "both"),
    ("cheap", "0.99 within 1.25x the oracle, where a fixed fleet does it"),
)


def compute_met(v: dict[str, Any]) -> dict[str, bool | None]:
    """Which targets one point's verdicts meet; None where the 0.99 target does not apply."""
    dominates = bool(v["dominates_hpa"] and v["dominates_keda"])
    return {
        "dominates": dominates,
        "frontier": bool(v["on_or_above_frontier"]),
        "both": dominates and bool(v["on_or_above_frontier"]),
        "cheap": bool(v["cheap_099"]["holds"]) if v["cheap_099"]["applies"] else None,
    }


def render_summary(runs: Sequence[dict[str, Any]]) -> str:
    """Per target, how many runs each inferfleet arm meets, and each headroom of the present-need
    sizing (the load's present need known exactly, no foresight); then every run an arm misses,
    with the headrooms of the present need that meet that target there."""
    met = [{name: compute_met(v) for name, v in _by_sizing(r["verdicts"]).items()} for r in runs]
    lines = ["| sizing | " + " | ".join(t for _, t in TARGETS) + " |", "|" + "---|" * (len(TARGETS) + 1)]
    for name in met[0] if met else ():
        cells = (
            f"{sum(m[name][k] is True for m in met)} / {sum(m[name][k] is not None for m in met)}"
            for k, _ in TARGETS
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    misses = {arm: list_misses(runs, arm) for arm in ARMS}
    same = misses[ARMS[0]] == misses[ARMS[1]]
    for arm in ARMS[:1] if same else ARMS:
        who = "either arm (the same runs)" if same else arm
        lines += ["", f"Missed by {who}; in brackets the present-need headrooms that meet it there:"]
        lines += [f"- {m}" for m in misses[arm]]
    return "\n".join([*lines, "", *render_frontier_gaps(runs)])


def render_frontier_gaps(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Per workload and sizing, the mean SLO below the frontier at the point's GPU-hours."""
    gaps: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for name, v in _by_sizing(r["verdicts"]).items():
            gaps.setdefault(r["workload"], {}).setdefault(name, []).append(v["below_frontier"])
    names = list(_by_sizing(runs[0]["verdicts"])) if runs else []
    lines = [
        "Mean SLO below the frontier at each point's GPU-hours (0: on or above it in every run):",
        "",
        "| workload | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for workload, by_name in gaps.items():
        cells = (f"{sum(by_name[n]) / len(by_name[n]):.4f}" for n in names)
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return lines


def render_report(runs: Sequence[dict[str, Any]]) -> str:
    """What a sweep writes to its .txt and `--rescore` prints: the table, then the summary."""
    return render(runs) + "\n\n" + render_summary(runs)


def _by_sizing(verdicts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    present = verdicts["present_need"]
    return {**{arm: verdicts[arm] for arm in ARMS}, **{f"present need +{h}": v for h, v in present.items()}}


def list_misses(runs: Sequence[dict[str, Any]], arm: str) -> list[str]:
    """The targets `arm` misses, one line per workload, starts and target, with the seeds."""
    seeds: dict[tuple[str, str, str, str], list[str]] = {}
    for r in runs:
        met, present = compute_met(r["verdicts"][arm]), r["verdicts"]["present_need"]
        for key, title in TARGETS:
            if key != "both" and met[key] is False:
                by = ", ".join(f"+{h}" for h, v in present.items() if compute_met(v)[key]) or "none"
                group = (r["workload"], r.get("starts", "uniform"), title, by)
                seeds.setdefault(group, []).append(str(r["seed"]))
    return [
        f"{w}, {st}: {t}, seed{'s' if len(ss) > 1 else ''} {', '.join(ss)} ({by})"
        for (w, st, t, by), ss in seeds.items()
    ]


def _starts(m: dict[str, Any]) -> str:
    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    warm, cold = m.get("median_warm_start_s"), m.get("median_cold_start_s")
    return f"{m.get('starts_warm', 0)}/{m.get('starts_cold', 0)}, {s(warm)}/{s(cold)}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.autoscale.sweep", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2, help="processes, at most 2")
    ap.add_argument("--only", help="comma-separated workload labels (default: all)")
    ap.add_argument("--out", type=Path, help="file stem (default results/<date>-sweep)")
    ap.add_argument("--starts", default=",".join(STARTS), help=f"comma-separated of {', '.join(STARTS)}")
    ap.add_argument(
        "--prefetch-nodes", type=int, default=0, help="with cache-on: warm nodes beyond the fleet"
    )
    ap.add_argument(
        "--rescore", type=Path, metavar="JSON", help="score a saved sweep again and print it; runs nothing"
    )
    args = ap.parse_args(argv)
    if args.rescore:
        runs = [{**r, "verdicts": compute_verdicts(r)} for r in json.loads(args.rescore.read_text())["runs"]]
        print(render_report(runs))
        return 0
    only = {x.strip() for x in args.only.split(",")} if args.only else None
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a.strip() for a in args.starts.split(",") if a.strip()]
    if set(arms) - set(STARTS):
        raise SystemExit(f"unknown --starts {sorted(set(arms) - set(STARTS))}; known: {', '.join(STARTS)}")
    jobs = [
        (*w, a, args.prefetch_nodes, s)
        for w in WORKLOADS
        if only is None or w[0] in only
        for a in arms
        for s in seeds
    ]
    started = time.monotonic()
    runs = run_jobs(run_one, jobs, args.workers)
    stem = args.out or RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-sweep"
    save_results(stem, "runs", runs, render_report(runs), started)
    return 0


def run_jobs(worker: Callable[[Any], T], jobs: Sequence[Any], workers: int) -> list[T]:
    """`worker` on every job, in at most 2 processes (this machine's cores), in order."""
    with multiprocessing.Pool(max(1, min(workers, 2))) as pool:
        return pool.map(worker, jobs, chunksize=1)


def save_results(stem: Path, key: str, results: Sequence[Any], text: str, started: float) -> None:
    """`stem`.json ({"meta", key: results}) and `stem`.txt (the table), and the table on stdout."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"wall_s": round(time.monotonic() - started, 1), "repo": str(REPO)}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, key: results}, indent=1) + "\n")
    stem.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\n{len(results)} {key} in {meta['wall_s']} s; {stem}.json, {stem}.txt")


if __name__ == "__main__":
    raise SystemExit(main())
