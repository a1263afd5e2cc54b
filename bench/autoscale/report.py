"""Metrics per policy, ratios against HPA and the oracle, the issue's targets, table and PNG."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path
from typing import Any

from bench.autoscale.sim import RunResult

METRIC_KEYS = ("slo_attainment", "gpu_hours", "p95_queue_wait_s", "scale_events", "reversals")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def reversals(changes: list[tuple[float, int, int]]) -> int:
    """Direction changes between consecutive scale events (up then down, or down then up)."""
    dirs = [1 if after > before else -1 for _, before, after in changes if after != before]
    return sum(1 for a, b in itertools.pairwise(dirs) if a != b)


def summarize(result: RunResult, slo_s: float, horizon: float, gpus_per_replica: int) -> dict[str, Any]:
    waits = sorted(result.waits)
    n = len(waits)
    refused = set(result.refused)
    ok = sum(1 for k, w in enumerate(result.waits) if w <= slo_s + 1e-9 and k not in refused)
    peak = max(
        [after for _, _, after in result.replica_changes] + [r for _, r, _, _, _ in result.timeline[:1]]
    )
    return {
        "slo_attainment": round(ok / n, 5) if n else 1.0,
        "gpu_hours": round(result.gpu_seconds / 3600.0, 3),
        "draining_gpu_hours": round(result.draining_gpu_seconds / 3600.0, 3),
        "p95_queue_wait_s": round(percentile(waits, 0.95), 3),
        "scale_events": len(result.replica_changes),
        "reversals": reversals(result.replica_changes),
        "p99_queue_wait_s": round(percentile(waits, 0.99), 3),
        "mean_queue_wait_s": round(sum(waits) / n, 3) if n else 0.0,
        "mean_replicas": round(result.gpu_seconds / gpus_per_replica / horizon, 2) if horizon > 0 else 0.0,
        "peak_replicas": peak,
        "requests": n,
        "completed": result.completed,
        "in_flight_at_end": result.in_flight,
        "unserved": result.unserved,
        "refused": len(refused),
        "prefix_hit_rate": round(result.prefix_hit_tokens / max(result.prompt_tokens, 1), 4),
        "kv_limited_s": round(result.kv_limited_s, 1),
        **start_medians(result.starts),
    }


def start_medians(starts: tuple[tuple[float, bool], ...]) -> dict[str, Any]:
    """How many replicas started warm and cold, and the median seconds to Ready of each."""
    warm = sorted(d for d, w in starts if w)
    cold = sorted(d for d, w in starts if not w)
    return {
        "starts_warm": len(warm),
        "starts_cold": len(cold),
        "median_warm_start_s": round(statistics.median(warm), 1) if warm else None,
        "median_cold_start_s": round(statistics.median(cold), 1) if cold else None,
    }


def _ratio(a: float, b: float) -> float | None:
    if b == 0:
        return None if a != 0 else 1.0
    return round(a / b, 3)


def add_ratios(policies: dict[str, dict[str, Any]]) -> None:
    """gpu_hours, reversals and SLO attainment of each policy relative to HPA's and the oracle's,
    and gpu_hours and SLO attainment relative to inferfleet's engine-counter arm."""
    hpa, oracle, engine = policies.get("hpa"), policies.get("oracle"), policies.get("inferfleet")
    for m in policies.values():
        if hpa is not None:
            m["gpu_hours_vs_hpa"] = _ratio(m["gpu_hours"], hpa["gpu_hours"])
            m["reversals_vs_hpa"] = _ratio(m["reversals"], hpa["reversals"])
            m["slo_attainment_vs_hpa"] = _ratio(m["slo_attainment"], hpa["slo_attainment"])
        if oracle is not None:
            m["gpu_hours_vs_oracle"] = _ratio(m["gpu_hours"], oracle["gpu_hours"])
        if engine is not None:
            m["gpu_hours_vs_inferfleet"] = _ratio(m["gpu_hours"], engine["gpu_hours"])
            m["slo_attainment_vs_inferfleet"] = _ratio(m["slo_attainment"], engine["slo_attainment"])


def targets(policies: dict[str, dict[str, Any]], arm: str = "inferfleet") -> dict[str, Any]:
    """The issue's targets for an arm of inferfleet, each with the numbers it compares."""
    inf, hpa, oracle = policies.get(arm), policies.get("hpa"), policies.get("oracle")
    if inf is None or hpa is None or oracle is None:
        return {}
    applies = oracle["slo_attainment"] >= 0.995
    out: dict[str, Any] = {
        "slo_attainment_ge_hpa": {
            "holds": inf["slo_attainment"] >= hpa["slo_attainment"],
            arm: inf["slo_attainment"],
            "hpa": hpa["slo_attainment"],
        },
        "slo_attainment_ge_0.99_where_oracle_ge_0.995": {
            "applies": applies,
            "holds": (not applies) or inf["slo_attainment"] >= 0.99,
            arm: inf["slo_attainment"],
            "oracle": oracle["slo_attainment"],
        },
        "gpu_hours_le_0.8x_hpa": {
            "holds": inf["gpu_hours"] <= 0.8 * hpa["gpu_hours"],
            "ratio": _ratio(inf["gpu_hours"], hpa["gpu_hours"]),
        },
        "gpu_hours_le_1.25x_oracle": {
            "holds": inf["gpu_hours"] <= 1.25 * oracle["gpu_hours"],
            "ratio": _ratio(inf["gpu_hours"], oracle["gpu_hours"]),
        },
        "reversals_le_0.5x_hpa": {
            "holds": inf["reversals"] <= 0.5 * hpa["reversals"],
            arm: inf["reversals"],
            "hpa": hpa["reversals"],
        },
    }
    out["all_hold"] = all(v["holds"] for v in out.values() if isinstance(v, dict))
    return out


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"trace {report['trace']}: {p['requests']} requests over {p['horizon_s']:.0f} s, "
        f"load x{p['load_scale']}, time compression x{p['time_compression']}, seed {p['seed']}; "
        f"C={p['concurrency']}/replica, "
        f"cold start {p['cold_start_min']:.0f}-{p['cold_start_max']:.0f} s, "
        f"SLO queue wait <= {p['slo_s']} s; replicas {p['min_replicas']}-{p['max_replicas']} "
        f"(peak need {p['peak_need']}, initial {p['initial_replicas']})",
        "",
        f"{'policy':<18} {'SLO att.':>8} {'SLO/HPA':>7} {'SLO/inf':>7} {'GPU-h':>7} {'vs HPA':>7} "
        f"{'vs orac.':>8} {'vs inf':>6} {'p95 wait':>9} {'events':>6} {'revers.':>7} {'rev/HPA':>7} "
        f"{'mean rep':>8} {'peak':>4}",
    ]
    for name, m in report["policies"].items():
        lines.append(
            f"{name:<18} {m['slo_attainment']:>8.4f} {_fmt_ratio(m.get('slo_attainment_vs_hpa')):>7} "
            f"{_fmt_ratio(m.get('slo_attainment_vs_inferfleet')):>7} {m['gpu_hours']:>7.2f} "
            f"{_fmt_ratio(m.get('gpu_hours_vs_hpa')):>7} {_fmt_ratio(m.get('gpu_hours_vs_oracle')):>8} "
            f"{_fmt_ratio(m.get('gpu_hours_vs_inferfleet')):>6} "
            f"{m['p95_queue_wait_s']:>8.2f}s {m['scale_events']:>6} {m['reversals']:>7} "
            f"{_fmt_ratio(m.get('reversals_vs_hpa')):>7} {m['mean_replicas']:>8.2f} {m['peak_replicas']:>4}"
        )
    for key, arm in (("targets", "inferfleet"), ("targets_gateway", "inferfleet-gateway")):
        lines.extend(_target_lines(report.get(key) or {}, arm))
    return "\n".join(lines)


def _target_lines(t: dict[str, Any], arm: str) -> list[str]:
    if not t:
        return []
    lines = ["", f"issue targets for {arm}:"]
    for key, v in t.items():
        if not isinstance(v, dict):
            continue
        detail = ", ".join(f"{k}={x}" for k, x in v.items() if k != "holds")
        lines.append(f"  [{'ok' if v['holds'] else 'MISS'}] {key}: {detail}")
    return lines


def write_png(
    report: dict[str, Any], timelines: dict[str, list[tuple[float, int, int, int, int]]], path: Path
) -> bool:
    """Replicas and queue over time per policy; False when matplotlib is not importable."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    fig, (ax_r, ax_q) = plt.subplots(2, 1, sharex=True, figsize=(11, 7))
    for name, tl in timelines.items():
        ts = [row[0] / 60 for row in tl]
        ax_r.step(ts, [row[1] for row in tl], where="post", label=name)
        ax_q.plot(ts, [row[3] for row in tl], label=name)
    ax_r.set_ylabel("replicas (requested)")
    ax_q.set_ylabel("waiting requests")
    ax_q.set_xlabel("minutes")
    ax_r.legend(loc="upper left", fontsize="small")
    ax_r.set_title(f"autoscale: {report['trace']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
