"""The gateway's /metrics: per service what arrived, waited, ran, failed and was retried.

Series carry `namespace` and `inferfleet_io_service` like the engines' own, so the operator's one
fleet query sums both by service (scrape the gateway with honor_labels). Arrivals are counted at
the door, before any queue: unlike an engine's completions they are not capped by a saturated fleet.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferfleet.planning.queue_queries import SERVICE_SERIES_LABEL

SERVICE = ("namespace", SERVICE_SERIES_LABEL)
LIVE_SUM: Final = "livesum"
"""With `--workers N` a gauge is the sum over the workers alive (prometheus_client's multiprocess
mode; one process ignores it)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.arrivals = Counter(
            "inferfleet_gateway_arrivals", "Requests that named this service.", SERVICE, registry=r
        )
        self.queued = Gauge(
            "inferfleet_gateway_queued_requests",
            "Requests waiting for a slot.",
            SERVICE,
            registry=r,
            multiprocess_mode=LIVE_SUM,
        )
        self.in_flight = Gauge(
            "inferfleet_gateway_in_flight_requests",
            "Requests holding a slot of an endpoint.",
            (*SERVICE, "endpoint"),
            registry=r,
            multiprocess_mode=LIVE_SUM,
        )
        self.responses = Counter(
            "inferfleet_gateway_responses", "Answers by HTTP status.", (*SERVICE, "code"), registry=r
        )
        self.retries = Counter(
            "inferfleet_gateway_retries",
            "Tries repeated on another endpoint.",
            (*SERVICE, "reason"),
            registry=r,
        )
        self.queue_wait = Histogram(
            "inferfleet_gateway_queue_wait_seconds",
            "Time from arrival to a slot.",
            SERVICE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "inferfleet_gateway_time_to_first_byte_seconds",
            "Time from arrival to the first byte sent to the client (TTFT for streams).",
            SERVICE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "inferfleet_gateway_request_duration_seconds",
            "Time from arrival to the end of the answer.",
            SERVICE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.activations = Counter(
            "inferfleet_gateway_activations", "Scale-from-zero requests sent.", SERVICE, registry=r
        )

    def forget(self, namespace: str, service: str, endpoints: list[str]) -> None:
        """Drop a deleted service's series."""
        for metric in (self.arrivals, self.queued, self.queue_wait, self.first_byte, self.duration):
            _remove(metric, namespace, service)
        _remove(self.activations, namespace, service)
        for endpoint in endpoints:
            _remove(self.in_flight, namespace, service, endpoint)

    def forget_endpoint(self, namespace: str, service: str, endpoint: str) -> None:
        _remove(self.in_flight, namespace, service, endpoint)


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    if isinstance(metric, Gauge):
        # A worker's series outlive remove() in its multiprocess file: leave it at 0 in the sum.
        metric.labels(*labels).set(0)
    with contextlib.suppress(KeyError), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # multiprocess mode: the series stays in its file
        metric.remove(*labels)
