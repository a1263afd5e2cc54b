"""Small measurements: percentiles, counters from a /metrics scrape, queries per tick, process RSS."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

RECONCILES = "inferfleet_reconcile_total"
QUERIES = "inferfleet_prometheus_queries_total"
TICKS = "inferfleet_autoscaler_ticks_total"
PROMETHEUS_QUERIES = "prometheus_http_requests_total"
PROMETHEUS_QUERY_HANDLER = "/api/v1/query"


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    k = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[min(k, len(ordered) - 1)]


Scrape = dict[str, float]
"""Sample name (with its labels, Prometheus style) -> value."""


def parse_scrape(text: str) -> Scrape:
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def scrape(url: str, timeout: float = 5) -> Scrape:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_scrape(response.read().decode())


def total(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """The sum of `name` over every label set that includes `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(w in rest.rstrip("}").split(",") for w in wanted):
            found += value
    return found


def delta(before: Mapping[str, float], after: Mapping[str, float], name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def delta_by_label(
    before: Mapping[str, float], after: Mapping[str, float], name: str, label: str
) -> dict[str, float]:
    """The increase of `name` between two scrapes, summed per value of `label` (increases only)."""
    values = {
        part.split("=", 1)[1].strip('"')
        for key in after
        if key.partition("{")[0] == name
        for part in key.partition("{")[2].rstrip("}").split(",")
        if part.startswith(f"{label}=")
    }
    increases = {v: delta(before, after, name, **{label: v}) for v in sorted(values)}
    return {v: n for v, n in increases.items() if n}


def queries_per_tick(before: Mapping[str, float], after: Mapping[str, float]) -> float | None:
    """Prometheus queries the operator sent per autoscaler tick between two scrapes of its /metrics."""
    ticks = delta(before, after, TICKS)
    return delta(before, after, QUERIES) / ticks if ticks > 0 else None


def prometheus_queries_per_tick(
    prometheus_before: Mapping[str, float],
    prometheus_after: Mapping[str, float],
    operator_before: Mapping[str, float],
    operator_after: Mapping[str, float],
) -> float | None:
    """The cross-check: instant queries Prometheus itself served per operator tick."""
    ticks = delta(operator_before, operator_after, TICKS)
    served = delta(prometheus_before, prometheus_after, PROMETHEUS_QUERIES, handler=PROMETHEUS_QUERY_HANDLER)
    return served / ticks if ticks > 0 else None


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
