"""The gateway's /metrics: per service what arrived, waited, ran, failed and was retried.

Series carry `namespace` and `inferfleet_io_service` like the engines' own, so the operator's one
fleet query sums both by service (scrape the gateway with honor_labels). Arrivals are counted at
the door, before any queue: unlike an engine's completions they are not capped by a saturated fleet.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferfleet.gateway.live_series import MULTIPROC_ENV, LiveKeys, live_file
from inferfleet.planning.queue_queries import SERVICE_SERIES_LABEL

SERVICE = ("namespace", SERVICE_SERIES_LABEL)
LIVE_SUM: Final = "livesum"
"""With `--workers N` a gauge is the sum over the workers alive (prometheus_client's multiprocess
mode; one process ignores it)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

Family = TypeVar("Family", Counter, Gauge, Histogram)


class Series(Generic[Family]):
    """A metric whose series are looked up once: prometheus_client's `labels()` costs about as much
    as the update itself (2-3 µs), and a request makes seven of them."""

    def __init__(self, family: Family) -> None:
        self.family: Family = family
        self._children: dict[tuple[str, ...], Family] = {}

    def labels(self, *values: str) -> Family:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.family.labels(*values)
        return child

    def remove_all(self, *prefix: str) -> None:
        """Drop every series whose leading label values are `prefix` (a service's, by code)."""
        for values in [v for v in self._children if v[: len(prefix)] == prefix]:
            self.remove(*values)

    def remove(self, *values: str) -> None:
        """Drop the series; with `--workers N` its worker's multiprocess file cannot forget it (a
        gauge's is set to 0), and the supervisor leaves it out (`gateway/live_series.py`)."""
        self._children.pop(values, None)
        if isinstance(self.family, Gauge):
            self.family.labels(*values).set(0)
        with contextlib.suppress(KeyError), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # multiprocess mode: the series stays in its file
            self.family.remove(*values)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    live: LiveKeys | None = field(default=None, init=False)
    """With `--workers N`: the keys this worker serves, for the supervisor's /metrics."""

    def __post_init__(self) -> None:
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            self.live = LiveKeys(live_file(directory, os.getpid()))
        r = self.registry
        self.arrivals = Series(
            Counter("inferfleet_gateway_arrivals", "Requests that named this service.", SERVICE, registry=r)
        )
        self.queued = Series(
            Gauge(
                "inferfleet_gateway_queued_requests",
                "Requests waiting for a slot.",
                SERVICE,
                registry=r,
                multiprocess_mode=LIVE_SUM,
            )
        )
        self.in_flight = Series(
            Gauge(
                "inferfleet_gateway_in_flight_requests",
                "Requests holding a slot of an endpoint.",
                (*SERVICE, "endpoint"),
                registry=r,
                multiprocess_mode=LIVE_SUM,
            )
        )
        self.responses = Series(
            Counter("inferfleet_gateway_responses", "Answers by HTTP status.", (*SERVICE, "code"), registry=r)
        )
        self.retries = Series(
            Counter(
                "inferfleet_gateway_retries",
                "Tries repeated on another endpoint.",
                (*SERVICE, "reason"),
                registry=r,
            )
        )
        self.queue_wait = _latency("inferfleet_gateway_queue_wait_seconds", "Time from arrival to a slot.", r)
        self.first_byte = _latency(
            "inferfleet_gateway_time_to_first_byte_seconds",
            "Time from arrival to the first byte sent to the client (TTFT for streams).",
            r,
        )
        self.duration = _latency(
            "inferfleet_gateway_request_duration_seconds", "Time from arrival to the end of the answer.", r
        )
        self.activations = Series(
            Counter("inferfleet_gateway_activations", "Scale-from-zero requests sent.", SERVICE, registry=r)
        )

    def serve(self, *key: str) -> None:
        """A service (namespace, service) or an endpoint (..., endpoint) the registry serves."""
        if self.live is not None:
            self.live.add(key)

    def forget(self, namespace: str, service: str, endpoints: list[str]) -> None:
        """Drop a deleted service's series."""
        if self.live is not None:
            self.live.discard((namespace, service))
        for series in (self.arrivals, self.queued, self.queue_wait, self.first_byte, self.duration):
            series.remove(namespace, service)
        self.activations.remove(namespace, service)
        self.responses.remove_all(namespace, service)
        self.retries.remove_all(namespace, service)
        for endpoint in endpoints:
            self.in_flight.remove(namespace, service, endpoint)

    def forget_endpoint(self, namespace: str, service: str, endpoint: str) -> None:
        if self.live is not None:
            self.live.discard((namespace, service, endpoint))
        self.in_flight.remove(namespace, service, endpoint)


def _latency(name: str, documentation: str, registry: CollectorRegistry) -> Series[Histogram]:
    return Series(Histogram(name, documentation, SERVICE, buckets=LATENCY_BUCKETS, registry=registry))
