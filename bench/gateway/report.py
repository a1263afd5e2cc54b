"""Added latency against the direct arm, the targets as PASS/FAIL lines, and the table (pure)."""

from __future__ import annotations

from typing import Any

from bench.gateway.arms import DIRECT, GATEWAY, VLLM_ROUTER
from bench.gateway.run import STREAMED
from bench.gateway.stats import added_ms

ADDED_P99_TARGET_MS = {100: 2.0, 1000: 10.0}
"""The gateway's added p99 (latency, and TTFT for streams) at this many concurrent streams."""
CPU_RATIO_TARGET = 3.0
"""The gateway's CPU per streamed chunk at most this many times vllm-router's."""


def figure_keys(mode: str) -> tuple[str, str]:
    """What a phase's latency is: TTFT for a stream, the whole request otherwise."""
    return ("ttfb_p50_ms", "ttfb_p99_ms") if mode == STREAMED else ("latency_p50_ms", "latency_p99_ms")


def with_added(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each phase with `added_p50_ms`/`added_p99_ms`: its percentile minus the direct arm's, same
    streams and mode, same run."""
    direct = {(p["streams"], p["mode"]): p for p in phases if p["arm"] == DIRECT}
    out = []
    for phase in phases:
        p50, p99 = figure_keys(phase["mode"])
        base = direct.get((phase["streams"], phase["mode"]))
        mine = phase["arm"] != DIRECT and base is not None
        out.append(
            phase
            | {
                "added_p50_ms": added_ms(phase[p50], base[p50]) if mine and base else None,
                "added_p99_ms": added_ms(phase[p99], base[p99]) if mine and base else None,
            }
        )
    return out


def _find(phases: list[dict[str, Any]], arm: str, streams: int, mode: str) -> dict[str, Any] | None:
    return next((p for p in phases if (p["arm"], p["streams"], p["mode"]) == (arm, streams, mode)), None)


def _verdict(value: float | None, holds: bool) -> str:
    return "n/a" if value is None else "PASS" if holds else "FAIL"


def targets(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, one line each; n/a when an arm or level did not run."""
    lines = []
    modes = sorted({p["mode"] for p in phases})
    for streams, limit in ADDED_P99_TARGET_MS.items():
        for mode in modes:
            phase = _find(phases, GATEWAY, streams, mode)
            value = None if phase is None else phase.get("added_p99_ms")
            what = "TTFT" if mode == STREAMED else "latency"
            lines.append({
                "target": f"gateway added p99 {what} at {streams} streams <= {limit:g} ms",
                "value": value,
                "verdict": _verdict(value, value is not None and value <= limit),
            })  # fmt: skip
    for streams in sorted({p["streams"] for p in phases if p["mode"] == STREAMED}):
        ours = _find(phases, GATEWAY, streams, STREAMED)
        theirs = _find(phases, VLLM_ROUTER, streams, STREAMED)
        a = None if ours is None else ours.get("proxy_cpu_per_1k_chunks_s")
        b = None if theirs is None else theirs.get("proxy_cpu_per_1k_chunks_s")
        ratio = round(a / b, 2) if a is not None and b else None
        lines.append({
            "target": f"gateway CPU per chunk at {streams} streams <= {CPU_RATIO_TARGET:g}x vllm-router's",
            "value": ratio,
            "verdict": _verdict(ratio, ratio is not None and ratio <= CPU_RATIO_TARGET),
        })  # fmt: skip
    return lines


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


COLUMNS = ("streams", "mode", "arm", "requests", "errors", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
           "proxy CPU s", "CPU s/1k chunks", "chunks", "loadgen", "machine")  # fmt: skip


def table_rows(phases: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in phases:
        p50, p99 = figure_keys(p["mode"])
        rows.append([
            str(p["streams"]), p["mode"], p["arm"], str(p["requests"]), str(p["errors"]),
            _fmt(p[p50]), _fmt(p[p99]), _fmt(p.get("added_p50_ms")), _fmt(p.get("added_p99_ms")),
            _fmt(p["proxy_cpu_s"]), _fmt(p["proxy_cpu_per_1k_chunks_s"], 4),
            str(p["chunks"]) if p["mode"] == STREAMED else "-",
            _pct(p["loadgen_machine_share"]), _pct(p["machine_busy_share"]),
        ])  # fmt: skip
    return rows


def _align(column: int, cell: str, width: int) -> str:
    return cell.ljust(width) if column < 3 else cell.rjust(width)


def _workers(report: dict[str, Any]) -> int:
    return int(report.get("params", {}).get("gateway_workers") or 1)


def table(report: dict[str, Any]) -> str:
    rows = [list(COLUMNS), *table_rows(report["phases"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(_align(i, c, w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += [
        "",
        "p50/p99: whole request when non-streamed, time to first event (TTFT) when streamed;",
        "+p50/+p99: minus the direct arm's at the same streams and mode (this run);",
        "loadgen/machine: share of all cores used by the load generator / by everything.",
        f"gateway: {_workers(report)} worker process(es) (--gateway-workers).",
        "",
    ]
    for name, arm in report["arms"].items():
        if not arm.get("ran"):
            lines.append(f"arm {name} did not run: {arm.get('reason', 'not selected')}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    lines += [""] + [f"{t['verdict']:4}  {t['target']}  ({_fmt(t['value'])})" for t in report["targets"]]
    if report.get("profile"):
        lines += ["", report["profile"]]
    return "\n".join(lines)
