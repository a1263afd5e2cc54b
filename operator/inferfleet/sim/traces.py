"""Request rates from LLM request traces in the Azure format (TIMESTAMP, ContextTokens, GeneratedTokens).

The shared traces are two one-hour samples of Azure's production LLM inference traffic
(16 Nov 2023), published with "Splitwise: Efficient generative LLM inference using phase
splitting" (Patel et al., ISCA 2024) in Azure/AzurePublicDataset, licensed CC-BY 4.0.

`load_mooncake` reads the Mooncake trace format (one JSON object per line: `timestamp` in ms,
`input_length`, `output_length`, `hash_ids`: the prompt's 512-token prefix blocks, equal ids
meaning a shared prefix). traces/mooncake-2025-conversation.jsonl.gz is one hour of Kimi's
conversation traffic from kvcache-ai/Mooncake (FAST'25 release), Apache-2.0.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

RateFn = Callable[[float], float]

MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class TraceRequest:
    arrival: float
    """Seconds from the first request."""
    input_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...]
    """Ids of the prompt's leading blocks (MOONCAKE_BLOCK_TOKENS each); equal ids, shared prefix."""


def load_mooncake(path: Path) -> list[TraceRequest]:
    """A Mooncake-format JSONL trace (plain or .gz), sorted by arrival."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        return []
    start = min(r["timestamp"] for r in rows)
    requests = [
        TraceRequest(
            arrival=(r["timestamp"] - start) / 1000.0,
            input_tokens=max(int(r["input_length"]), 0),
            output_tokens=max(int(r["output_length"]), 1),
            prefix_blocks=tuple(int(h) for h in r["hash_ids"]),
        )
        for r in rows
    ]
    return sorted(requests, key=lambda r: r.arrival)


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
