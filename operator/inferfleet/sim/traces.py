"""Request rates from LLM request traces in the Azure format (TIMESTAMP, ContextTokens, GeneratedTokens).

The shared traces are two one-hour samples of Azure's production LLM inference traffic
(16 Nov 2023), published with "Splitwise: Efficient generative LLM inference using phase
splitting" (Patel et al., ISCA 2024) in Azure/AzurePublicDataset, licensed CC-BY 4.0.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

RateFn = Callable[[float], float]


def load_arrivals(path: Path) -> list[float]:
    """Arrival times in seconds from the first request."""
    with path.open(newline="") as f:
        stamps = [datetime.fromisoformat(row["TIMESTAMP"][:26]) for row in csv.DictReader(f)]
    if not stamps:
        return []
    start = min(stamps)
    return sorted((s - start).total_seconds() for s in stamps)


def trace_rate(
    arrivals: list[float], *, compression: float = 1.0, scale: float = 1.0, bin_seconds: float = 10
) -> RateFn:
    """Requests per second of the trace replayed `compression` times faster, times `scale`.

    Rates are averaged over `bin_seconds` of trace time so a replay sees the trace's bursts,
    not single-request noise; past the end the rate is 0.
    """
    bins: dict[int, int] = {}
    for t in arrivals:
        bins[int(t // bin_seconds)] = bins.get(int(t // bin_seconds), 0) + 1

    def rate(t: float) -> float:
        trace_t = t * compression
        return bins.get(int(trace_t // bin_seconds), 0) / bin_seconds * compression * scale

    return rate
