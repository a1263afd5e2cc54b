"""PromQL for engine load: one instant query answers for the whole fleet, grouped by service.

Engine pods are scraped with their namespace and `inferfleet.io/service` label (as the
Prometheus label `inferfleet_io_service`), so `sum by` gives one series per service. Per engine
the query asks for the waiting and running requests and the completion rate, the engine's
finished-request counter over the last minute: with it the scaling policy estimates arrivals
and service time (Little's law) instead of treating a backlog as concurrent load. A service
whose pods have not finished anything yet gets no rate, and the policy falls back to the queue.

The same query asks for the KV cache's usage, averaged over the service's engines: the share of
KV-cache blocks held by running requests (vLLM `vllm:kv_cache_usage_perc`, before v0.10
`vllm:gpu_cache_usage_perc`; SGLang `sglang:token_usage`, tokens held over the pool). TGI
exports no equivalent (its router knows the batch, not the memory), so its services have none
and the policy sizes them by slots alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api import EngineKind

SERVICE_SERIES_LABEL = "inferfleet_io_service"
GROUPING = f"namespace, {SERVICE_SERIES_LABEL}"
SIGNAL_LABEL = "inferfleet_signal"
RATE_WINDOW = "1m"


@dataclass(frozen=True)
class EngineSignals:
    waiting: str
    """Gauge of requests queued for a slot in the running batch."""
    running: str
    """Gauge of requests in the running batch."""
    completed: str
    """Counter of finished requests."""
    kv_usage: tuple[str, ...] = ()
    """Gauges of the KV cache's used fraction (0..1), the first that exists counts; () for none."""


# As the engines name them: vLLM's /metrics, SGLang's collector (--enable-metrics), TGI's router.
ENGINE_SIGNALS: dict[EngineKind, EngineSignals] = {
    EngineKind.VLLM: EngineSignals(
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:request_success_total",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    EngineKind.SGLANG: EngineSignals(
        "sglang:num_queue_reqs",
        "sglang:num_running_reqs",
        "sglang:num_requests_total",
        ("sglang:token_usage",),
    ),
    EngineKind.TGI: EngineSignals("tgi_queue_size", "tgi_batch_current_size", "tgi_request_success"),
}


def _tagged(expr: str, signal: str, aggregate: str = "sum") -> str:
    return f'label_replace({aggregate} by ({GROUPING}) ({expr}), "{SIGNAL_LABEL}", "{signal}", "", "")'


# inferfleet's gateway, summed over its replicas: its queue, the requests it has on engines, and
# arrivals counted at the door (not capped by a saturated fleet, as completions are).
GATEWAY_SIGNALS = {
    "gateway_waiting": "inferfleet_gateway_queued_requests",
    "gateway_running": "inferfleet_gateway_in_flight_requests",
    "arrival_rate": f"rate(inferfleet_gateway_arrivals_total[{RATE_WINDOW}])",
}
SIGNALS = ("waiting", "running", "completion_rate", "kv_cache_usage", *GATEWAY_SIGNALS)


def build_fleet_query() -> str:
    """Waiting, running, completion rate and KV-cache usage (a mean, the rest sums) of every
    engine kind, and the gateway's signals, in one instant query. Of several names for the KV
    cache (an engine that renamed it) a service gets the first: `or` keeps the left side's
    series and adds the right side's only for services the left has none of."""
    parts = []
    for signals in ENGINE_SIGNALS.values():
        parts.append(_tagged(signals.waiting, "waiting"))
        parts.append(_tagged(signals.running, "running"))
        parts.append(_tagged(f"rate({signals.completed}[{RATE_WINDOW}])", "completion_rate"))
        parts.extend(_tagged(gauge, "kv_cache_usage", "avg") for gauge in signals.kv_usage)
    parts.extend(_tagged(expr, signal) for signal, expr in GATEWAY_SIGNALS.items())
    return " or ".join(parts)


@dataclass(frozen=True)
class QueueSample:
    waiting: float | None
    running: float | None
    completion_rate: float | None = None
    """Requests finished per second over the last minute; None when there is no such counter."""
    arrival_rate: float | None = None
    """Requests per second counted at the gateway's door over the last minute; None when no
    gateway serves the service."""
    kv_cache_usage: float | None = None
    """Mean used fraction (0..1) of the engines' KV caches; None when they export none (TGI)."""


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_fleet_result(result: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], QueueSample]:
    """Samples by (namespace, service); NaN, Inf and garbage become None (missing).

    A service appears only with a queue series: a completion rate alone is no sample."""
    values: dict[tuple[str, str], dict[str, float | None]] = {}
    for series in result:
        metric = series.get("metric") or {}
        key = (str(metric.get("namespace", "")), str(metric.get(SERVICE_SERIES_LABEL, "")))
        signal = metric.get(SIGNAL_LABEL)
        if not all(key) or signal not in SIGNALS:
            continue
        value = _number((series.get("value") or [None, None])[1])
        if signal.endswith("_rate") and value is not None and value < 0:
            value = None
        values.setdefault(key, {})[signal] = value
    return {k: sample for k, v in values.items() if (sample := compute_fleet_sample(v)) is not None}


def compute_fleet_sample(values: Mapping[str, float | None]) -> QueueSample | None:
    """One service's sample from its engines' and its gateway's signals.

    Requests wait in two places when a gateway serves the service: its queue and the engines'.
    The engines' running requests are the load when they report; when they do not (no replica
    is ready yet, or their scrape fails) the gateway's requests on engines stand in, so a
    service woken from zero has a sample that holds it up while its first replica starts.
    """
    engines = "waiting" in values or "running" in values
    gateway = "gateway_waiting" in values
    if not engines and not gateway:
        return None
    waiting, running = values.get("waiting"), values.get("running")
    if gateway:
        queued = values.get("gateway_waiting")
        waiting = None if queued is None or (engines and waiting is None) else (waiting or 0.0) + queued
        running = running if engines else (values.get("gateway_running") or 0.0)
    arrivals = values.get("arrival_rate") if gateway else None
    return QueueSample(
        waiting, running, values.get("completion_rate"), arrivals, values.get("kv_cache_usage")
    )


def parse_override_result(result: Iterable[Mapping[str, Any]]) -> QueueSample:
    """A user's `scaling.query` gives the service's total waiting requests (summed if several series)."""
    numbers = [_number((s.get("value") or [None, None])[1]) for s in result]
    if not numbers or any(n is None for n in numbers):
        return QueueSample(None, None)
    return QueueSample(sum(n for n in numbers if n is not None), None)


def compute_override_sample(override: QueueSample, engines: QueueSample | None) -> QueueSample:
    """A service's sample when its `scaling.query` gives the waiting requests.

    The query replaces the engines' queue; their running requests and completion rate still
    come from the fleet query when the engines report them, so the policy sizes for the load
    as it does without a query. Engines that report nothing (an engine kind the fleet query
    does not know) leave the query as the whole signal: nothing counts as running.
    """
    if override.waiting is None:
        return QueueSample(None, None)
    if engines is None or engines.running is None:
        return QueueSample(override.waiting, 0.0)
    return QueueSample(
        override.waiting, engines.running, engines.completion_rate, kv_cache_usage=engines.kv_cache_usage
    )
