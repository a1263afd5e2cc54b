"""PromQL for engine queue depth: one query answers for the whole fleet, grouped by service.

Engine pods are scraped with their namespace and `inferfleet.io/service` label (as the
Prometheus label `inferfleet_io_service`), so `sum by` gives one series per service.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api import EngineKind

SERVICE_SERIES_LABEL = "inferfleet_io_service"
GROUPING = f"namespace, {SERVICE_SERIES_LABEL}"

# (waiting metric, running metric) per engine, as the engines name them.
ENGINE_QUEUE_METRICS: dict[EngineKind, tuple[str, str | None]] = {
    EngineKind.VLLM: ("vllm:num_requests_waiting", "vllm:num_requests_running"),
    EngineKind.SGLANG: ("sglang:num_queue_reqs", "sglang:num_running_reqs"),
    EngineKind.TGI: ("tgi_queue_size", None),
}


def _tagged(expr: str, kind: str) -> str:
    return f'label_replace(sum by ({GROUPING}) ({expr}), "inferfleet_signal", "{kind}", "", "")'


def build_fleet_query() -> str:
    """Waiting and running requests of every engine kind in one instant query."""
    parts = []
    for waiting, running in ENGINE_QUEUE_METRICS.values():
        parts.append(_tagged(waiting, "waiting"))
        if running:
            parts.append(_tagged(running, "running"))
    return " or ".join(parts)


@dataclass(frozen=True)
class QueueSample:
    waiting: float | None
    running: float | None


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_fleet_result(result: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], QueueSample]:
    """Samples by (namespace, service); NaN, Inf and garbage become None (missing)."""
    values: dict[tuple[str, str], dict[str, float | None]] = {}
    for series in result:
        metric = series.get("metric") or {}
        key = (str(metric.get("namespace", "")), str(metric.get(SERVICE_SERIES_LABEL, "")))
        signal = metric.get("inferfleet_signal")
        if not all(key) or signal not in ("waiting", "running"):
            continue
        value = _number((series.get("value") or [None, None])[1])
        values.setdefault(key, {})[signal] = value
    return {k: QueueSample(v.get("waiting"), v.get("running")) for k, v in values.items()}


def parse_override_result(result: Iterable[Mapping[str, Any]]) -> QueueSample:
    """A user's `scaling.query` gives the service's total waiting requests (summed if several series)."""
    numbers = [_number((s.get("value") or [None, None])[1]) for s in result]
    if not numbers or any(n is None for n in numbers):
        return QueueSample(None, None)
    return QueueSample(sum(n for n in numbers if n is not None), None)
