"""Engine load in from Prometheus (prometheus-api-client): one batched query per tick.

The query and the parsing of its answer are pure (planning.queue_queries); this is the IO.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_api_client import PrometheusConnect
from prometheus_client import Counter, Histogram
from urllib3.util.retry import Retry

from inferfleet.planning.queue_queries import (
    QueueSample,
    build_fleet_query,
    parse_fleet_result,
    parse_override_result,
)

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

    def read_fleet(self) -> dict[tuple[str, str], QueueSample]:
        return parse_fleet_result(self._query("fleet", build_fleet_query()))

    def read_override(self, promql: str) -> QueueSample:
        return parse_override_result(self._query("override", promql))
