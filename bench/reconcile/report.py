"""The side-by-side table (rows = figures, columns = inferfleet, naive, target, PASS/MISS) and targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.reconcile.audit import VERBS

RSS_TARGET_MB = 300.0
RSS_TARGET_SERVICES = 1000
QUERIES_PER_TICK_TOLERANCE = 0.05
"""A scrape can fall between a tick's counter and its query: off by one in 60 ticks is still 1."""


def one_query_per_tick(value: float) -> bool:
    return abs(value - 1) <= QUERIES_PER_TICK_TOLERANCE


@dataclass(frozen=True)
class Figure:
    label: str
    value: Callable[[dict[str, Any]], Any]
    """Reads the figure from one arm's result (None: does not apply)."""
    target: str = ""
    holds: Callable[[Any], bool] | None = None
    digits: int = 2


def _get(*path: str) -> Callable[[dict[str, Any]], Any]:
    def read(result: dict[str, Any]) -> Any:
        value: Any = result
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return read


def figures(services: int) -> list[Figure]:
    doubled = str(2 * services)
    rss_label = f"operator RSS at {doubled} services (MB)"
    rss_target = f"< {RSS_TARGET_MB:g}" + ("" if 2 * services == RSS_TARGET_SERVICES else " at 1000")
    return [
        Figure("create -> children applied p50 (s)", _get("batch", "to_children", "p50_s")),
        Figure("create -> children applied p99 (s)", _get("batch", "to_children", "p99_s")),
        Figure("create -> Ready p50 (s)", _get("batch", "to_ready", "p50_s")),
        Figure("create -> Ready p99 (s)", _get("batch", "to_ready", "p99_s")),
        *[Figure(f"API requests per reconcile: {verb}", _get("batch", "requests_per_reconcile", verb))
          for verb in VERBS],
        Figure("API requests per reconcile: all", _get("batch", "requests_per_reconcile_total")),
        Figure("reconciles (batch 1)", _get("batch", "reconciles"), digits=0),
        Figure("API requests per service (batch 1)", _get("batch", "requests_per_service")),
        Figure("  of which writes", _get("batch", "writes_per_service")),
        Figure("writes in the quiet window", _get("quiet", "writes"), "0", lambda v: v == 0, digits=0),
        Figure("Prometheus queries per tick (operator)", _get("quiet", "queries_per_tick"), "1",
               one_query_per_tick),
        Figure("  cross-check: served by Prometheus", _get("quiet", "prometheus_queries_per_tick"), "1",
               one_query_per_tick),
        Figure(f"operator RSS at {services} services (MB)", _get("rss_mb", str(services)), digits=1),
        Figure(rss_label, _get("rss_mb", doubled), rss_target, lambda v: v < RSS_TARGET_MB, digits=1),
    ]  # fmt: skip


def fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def verdict(figure: Figure, value: Any) -> str:
    if figure.holds is None:
        return ""
    if value is None:
        return "n/a"
    return "PASS" if figure.holds(value) else "MISS"


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each targeted figure of inferfleet: value, target and whether it holds."""
    inferfleet = report["arms"].get("inferfleet") or {}
    out = {}
    for figure in figures(report["params"]["services"]):
        if figure.holds is not None:
            value = figure.value(inferfleet)
            out[figure.label.strip()] = {
                "value": value,
                "target": figure.target,
                "verdict": verdict(figure, value),
            }
    return out


def _services(result: dict[str, Any] | None, batch: str) -> int:
    """Services that exist after `batch` (the second batch adds as many again)."""
    first = int(((result or {}).get("batch") or {}).get("services") or 0)
    return first * (2 if batch == "second_batch" else 1)


def table(report: dict[str, Any]) -> str:
    p = report["params"]
    arms: dict[str, Any] = report["arms"]
    lines = [
        f"bench/reconcile: {p['services']} InferenceServices (1 GPU, every other one autoscaled) in "
        f"{p['namespaces']} namespaces on {p['nodes']} fake 8-GPU nodes; "
        f"quiet window {p['quiet_seconds']:g} s, autoscale interval {p['autoscale_interval']:g} s",
        "",
        f"{'figure':<44} {'inferfleet':>11} {'naive':>11} {'target':>14} {'':>5}",
    ]
    for figure in figures(p["services"]):
        cells = []
        for name in ("inferfleet", "naive"):
            result = arms.get(name)
            if result is None:
                cells.append("skipped")
            elif "error" in result:
                cells.append("error")
            else:
                cells.append(fmt(figure.value(result), figure.digits))
        check = verdict(figure, figure.value(arms.get("inferfleet") or {})) if "inferfleet" in arms else ""
        lines.append(f"{figure.label:<44} {cells[0]:>11} {cells[1]:>11} {figure.target:>14} {check:>5}")
    for name, result in arms.items():
        if result and "error" in result:
            lines += ["", f"{name} failed: {result['error']}"]
        for batch in ("batch", "second_batch"):
            children, services = (result or {}).get(batch, {}).get("children"), _services(result, batch)
            if children and any(n < services for n in children.values()):
                lines += [
                    "",
                    f"{name}: children missing after {batch} ({services} services cumulative): {children}",
                ]
        quiet = (result or {}).get("quiet") or {}
        if quiet.get("write_requests"):
            lines += ["", f"{name}: writes in the quiet window:"]
            lines += [f"  {w}" for w in quiet["write_requests"][:40]]
    return "\n".join(lines)
