"""Queue depth in from Prometheus (prometheus-api-client): one batched query per tick.

The fleet query asks, in one instant query, for every service's waiting and running requests
(planning.queue_queries) and its completion rate, the engines' request-success counter over the
last minute: with it the scaling policy estimates arrivals and service time (Little's law)
instead of treating a backlog as concurrent load. Engines without such a counter (or a service
whose pods have not finished anything yet) get no rate, and the policy falls back to the queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_api_client import PrometheusConnect
from prometheus_client import Counter, Histogram
from urllib3.util.retry import Retry

from inferfleet.api import EngineKind
from inferfleet.planning.queue_queries import (
    GROUPING,
    SERVICE_SERIES_LABEL,
    QueueSample,
    build_fleet_query,
    parse_fleet_result,
    parse_override_result,
)

COMPLETION_SIGNAL = "completion_rate"
RATE_WINDOW = "1m"
# Counter of finished requests per engine, as the engines name them (SGLang and TGI: none wired).
ENGINE_COMPLETION_COUNTERS: dict[EngineKind, str] = {EngineKind.VLLM: "vllm:request_success_total"}


@dataclass(frozen=True)
class FleetSample(QueueSample):
    completion_rate: float | None = None
    """Requests finished per second over the last minute; None when the engine has no counter."""


def build_batched_query() -> str:
    """The queue query and every engine's completion rate, one instant query for the fleet."""
    parts = [build_fleet_query()]
    for counter in ENGINE_COMPLETION_COUNTERS.values():
        rate = f"sum by ({GROUPING}) (rate({counter}[{RATE_WINDOW}]))"
        parts.append(f'label_replace({rate}, "inferfleet_signal", "{COMPLETION_SIGNAL}", "", "")')
    return " or ".join(parts)


def parse_batched_result(result: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], FleetSample]:
    """Queue samples by (namespace, service), each with its completion rate when there is one."""
    series = list(result)
    rates: dict[tuple[str, str], float] = {}
    for item in series:
        metric = item.get("metric") or {}
        if metric.get("inferfleet_signal") != COMPLETION_SIGNAL:
            continue
        key = (str(metric.get("namespace", "")), str(metric.get(SERVICE_SERIES_LABEL, "")))
        try:
            value = float((item.get("value") or [None, None])[1])
        except (TypeError, ValueError):
            continue
        if all(key) and math.isfinite(value) and value >= 0:
            rates[key] = value
    queues = parse_fleet_result(series)
    return {k: FleetSample(q.waiting, q.running, rates.get(k)) for k, q in queues.items()}


QUERY_SECONDS = Histogram(
    "inferfleet_prometheus_query_duration_seconds", "Prometheus query latency.", ["kind"]
)
QUERY_ERRORS = Counter("inferfleet_prometheus_query_errors_total", "Failed Prometheus queries.", ["kind"])
QUERIES = Counter("inferfleet_prometheus_queries_total", "Prometheus queries sent.", ["kind"])


class MetricsUnavailableError(Exception):
    """Prometheus could not answer: the autoscaler holds every service where it is."""


@dataclass
class QueueReader:
    url: str
    timeout_seconds: float = 5

    def __post_init__(self) -> None:
        # No retries inside a tick: the next tick is the retry, and a slow failure would delay every service.
        self._prom = PrometheusConnect(
            url=self.url, disable_ssl=True, timeout=int(self.timeout_seconds), retry=Retry(total=0)
        )

    def _query(self, kind: str, promql: str) -> list[dict[str, object]]:
        QUERIES.labels(kind).inc()
        started = time.monotonic()
        try:
            result: list[dict[str, object]] = self._prom.custom_query(promql)
            return result
        except Exception as e:  # requests/HTTP/parse errors all mean "no data this tick"
            QUERY_ERRORS.labels(kind).inc()
            raise MetricsUnavailableError(f"Prometheus at {self.url} did not answer: {e}") from e
        finally:
            QUERY_SECONDS.labels(kind).observe(time.monotonic() - started)

    def read_fleet(self) -> dict[tuple[str, str], FleetSample]:
        return parse_batched_result(self._query("fleet", build_batched_query()))

    def read_override(self, promql: str) -> QueueSample:
        return parse_override_result(self._query("override", promql))
