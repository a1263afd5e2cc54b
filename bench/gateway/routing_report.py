"""The routing arm's figures, its targets as PASS/FAIL lines, and its table (pure)."""

from __future__ import annotations

import json
import math
from typing import Any

from bench.gateway.stats import Record, count_errors, summarize

ROUND_ROBIN, LEAST_LOAD, PREFIX_AFFINITY, CACHE_AWARE = (
    "round-robin",
    "least-load",
    "prefix-affinity",
    "vllm-router-cache-aware",
)
ARMS = (ROUND_ROBIN, LEAST_LOAD, PREFIX_AFFINITY, CACHE_AWARE)
TTFT_P50_RATIO = 0.6
"""prefix-affinity's TTFT p50 at most this many times round-robin's."""
HIT_RATE_RATIO = 2.0
"""prefix-affinity's prefix-cache hit rate at least this many times round-robin's."""


def arm_figures(data: dict[str, Any], hit_rate: float | None, spread: float | None) -> dict[str, Any]:
    """An arm's figures from the replay's output and the engines' counters around it: every request
    counts (each arm starts cold and replays the same requests, so no warm-up is left out)."""
    records = [Record(*r) for r in data["records"]]
    summary = summarize(records, (-math.inf, math.inf))
    return {
        "requests": summary.requests,
        "errors": summary.errors,
        "errors_by_kind": count_errors(records),
        "ttft_p50_ms": summary.ttfb_p50_ms,
        "ttft_p99_ms": summary.ttfb_p99_ms,
        "latency_p50_ms": summary.latency_p50_ms,
        "hit_rate": None if hit_rate is None else round(hit_rate, 4),
        "busiest_engine_over_mean": None if spread is None else round(spread, 3),
        "late_p99_s": data.get("late_p99_s"),
        "replay_cpu_s": data.get("cpu_seconds"),
    }


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


def _get(arms: list[dict[str, Any]], name: str, key: str) -> float | None:
    arm = next((a for a in arms if a["arm"] == name and a.get("ran")), None)
    return None if arm is None else arm.get(key)


def _line(target: str, value: float | None, holds: bool | None) -> dict[str, Any]:
    verdict = "n/a" if value is None or holds is None else "PASS" if holds else "FAIL"
    return {"target": target, "value": value, "verdict": verdict}


def targets(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 16's routing targets, one line each; n/a when an arm did not run."""
    p50 = ratio(_get(arms, PREFIX_AFFINITY, "ttft_p50_ms"), _get(arms, ROUND_ROBIN, "ttft_p50_ms"))
    hits = ratio(_get(arms, PREFIX_AFFINITY, "hit_rate"), _get(arms, ROUND_ROBIN, "hit_rate"))
    p99 = ratio(_get(arms, PREFIX_AFFINITY, "ttft_p99_ms"), _get(arms, LEAST_LOAD, "ttft_p99_ms"))
    return [
        _line(f"prefix-affinity TTFT p50 <= {TTFT_P50_RATIO:g}x round-robin's", p50,
              None if p50 is None else p50 <= TTFT_P50_RATIO),
        _line(f"prefix-affinity prefix-cache hit rate >= {HIT_RATE_RATIO:g}x round-robin's", hits,
              None if hits is None else hits >= HIT_RATE_RATIO),
        _line("prefix-affinity TTFT p99 <= least-load's (ratio)", p99, None if p99 is None else p99 <= 1.0),
    ]  # fmt: skip


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def table(report: dict[str, Any]) -> str:
    arms = report["arms"]
    rr_p50, rr_hits = _get(arms, ROUND_ROBIN, "ttft_p50_ms"), _get(arms, ROUND_ROBIN, "hit_rate")
    head = ("arm", "proxy", "requests", "errors", "TTFT p50 ms", "p50 / RR", "TTFT p99 ms", "hit rate",
            "hits / RR", "busiest engine / mean", "proxy CPU s", "late p99 s")  # fmt: skip
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for a in arms:
        if not a.get("ran"):
            lines.append(f"{a['arm']} | did not run: {a.get('reason')}")
            continue
        row = (a["arm"], a["proxy"], a["requests"], a["errors"], a["ttft_p50_ms"],
               ratio(a["ttft_p50_ms"], rr_p50), a["ttft_p99_ms"], a["hit_rate"],
               ratio(a["hit_rate"], rr_hits), a["busiest_engine_over_mean"], a["proxy_cpu_s"],
               a["late_p99_s"])  # fmt: skip
        lines.append(" | ".join(_cell(v) for v in row))
    lines += [
        f"{a['arm']}: vllm-router prefix-routing decisions by outcome: {json.dumps(a['router_decisions'])}"
        for a in arms
        if a.get("router_decisions")
    ]
    lines.append("")
    lines += [f"{t['verdict']}: {t['target']}: {_cell(t['value'])}" for t in report["targets"]]
    lines.append("")
    lines.append("cache model (no engines, no time): " + json.dumps(report.get("cache_model", {})))
    lines.append("gateway prefix affinity, no load: " + json.dumps(report.get("routing_census", {})))
    lines.append("params: " + json.dumps(report["params"]))
    return "\n".join(lines)
