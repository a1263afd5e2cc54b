"""Per-request records of the load generator into the report's figures (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple


class Record(NamedTuple):
    """One request as the load generator saw it; times in seconds from the generator's start."""

    stream: int
    """Which of the N concurrent streams (closed-loop workers) sent it."""
    start: float
    first_byte: float | None
    """First byte of the response body (for a stream: its first event); None when none came."""
    end: float
    chunks: int
    """Streamed events other than [DONE] (0 for a non-streamed request)."""
    status: int
    """HTTP status; 0 when no response came (connect error, timeout)."""
    complete: bool
    """The whole answer came: status 200 and, for a stream, its [DONE]."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    requests: int
    """Requests started inside the measured window."""
    errors: int
    """Of those, the ones that did not complete."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    ttfb_p50_ms: float | None
    """Time to the first byte of the body: for a stream, its TTFT."""
    ttfb_p99_ms: float | None
    chunks: int
    """Streamed chunks received over the whole run (warm-up included, as the CPU it is divided into)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summarize(records: Iterable[Record], window: tuple[float, float]) -> Summary:
    """Figures of the requests that started inside `window` (warm-up and tail left out)."""
    records = list(records)
    measured = [r for r in records if window[0] <= r.start < window[1]]
    ok = [r for r in measured if r.complete]
    latency = [r.end - r.start for r in ok]
    ttfb = [r.first_byte - r.start for r in ok if r.first_byte is not None]
    return Summary(
        requests=len(measured),
        errors=len(measured) - len(ok),
        latency_p50_ms=_ms(percentile(latency, 50)),
        latency_p99_ms=_ms(percentile(latency, 99)),
        ttfb_p50_ms=_ms(percentile(ttfb, 50)),
        ttfb_p99_ms=_ms(percentile(ttfb, 99)),
        chunks=sum(r.chunks for r in records),
    )


def window_chunk_rate(records: Iterable[Record], window: tuple[float, float]) -> float:
    """Chunks a second in the steady state: those of the requests started inside `window`, over
    its length (a request running past its end stands for one that began before its start)."""
    length = window[1] - window[0]
    if length <= 0:
        return 0.0
    return sum(r.chunks for r in records if window[0] <= r.start < window[1]) / length


def added_ms(arm: float | None, direct: float | None) -> float | None:
    """What the proxy adds to a percentile measured directly in the same run (may be < 0: noise)."""
    if arm is None or direct is None:
        return None
    return round(arm - direct, 3)


def cpu_per_1k_chunks(cpu_seconds: float | None, chunks: int) -> float | None:
    if cpu_seconds is None or chunks <= 0:
        return None
    return round(cpu_seconds / chunks * 1000, 4)


def count_errors(records: Iterable[Record]) -> dict[str, int]:
    """Failed requests by HTTP status ("no response" for 0, "incomplete" for a 200 cut short)."""
    counts: dict[str, int] = {}
    for r in records:
        if r.complete:
            continue
        key = "no response" if r.status == 0 else "incomplete" if r.status == 200 else str(r.status)
        counts[key] = counts.get(key, 0) + 1
    return counts
