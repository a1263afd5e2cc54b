"""What the demo reads of the gateway: the door's signals as the autoscaler sees them, and its counters.

`DOOR_QUERY` asks Prometheus, per service, for the gateway's queue, its requests on engines and
the arrival rate counted at the door: the expressions of the operator's own fleet query
(planning.queue_queries.GATEWAY_SIGNALS), so the live view and the report show the numbers the
autoscaler decided on. `parse_door_result` and `parse_gateway_counters` are pure; `read_door`
and `read_gateway_counters` do the HTTP.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from inferfleet.planning.queue_queries import GATEWAY_SIGNALS, GROUPING, SERVICE_SERIES_LABEL, SIGNAL_LABEL

DOOR_QUERY = " or ".join(
    f'label_replace(sum by ({GROUPING}) ({expr}), "{SIGNAL_LABEL}", "{signal}", "", "")'
    for signal, expr in GATEWAY_SIGNALS.items()
)


@dataclass(frozen=True)
class DoorSample:
    """One service at the gateway: requests waiting at the door, on engines, and arriving per second."""

    queued: float | None = None
    in_flight: float | None = None
    arrival_rate: float | None = None
    """Over the last minute (the fleet query's rate window); None until Prometheus has two scrapes."""


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_door_result(result: Iterable[Mapping[str, Any]], namespace: str) -> dict[str, DoorSample]:
    """DoorSamples by service name, for the services of `namespace`."""
    values: dict[str, dict[str, float | None]] = {}
    for series in result:
        metric = series.get("metric") or {}
        service, signal = metric.get(SERVICE_SERIES_LABEL), metric.get(SIGNAL_LABEL)
        if metric.get("namespace") != namespace or not service or signal not in GATEWAY_SIGNALS:
            continue
        values.setdefault(str(service), {})[str(signal)] = _number((series.get("value") or [None, None])[1])
    return {
        name: DoorSample(v.get("gateway_waiting"), v.get("gateway_running"), v.get("arrival_rate"))
        for name, v in values.items()
    }


def read_door(prometheus_url: str, namespace: str, timeout: float = 5.0) -> dict[str, DoorSample]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": DOOR_QUERY})
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.loads(response.read())
    return parse_door_result(body.get("data", {}).get("result", []), namespace)


@dataclass(frozen=True)
class GatewayCounts:
    """One service's totals at the gateway since it started."""

    arrivals: int = 0
    responses: Mapping[str, int] | None = None
    """By HTTP status code."""
    activations: int = 0
    """Scale-from-zero requests the gateway sent."""


def parse_gateway_counters(text: str, namespace: str) -> dict[str, GatewayCounts]:
    """Arrivals, responses by code and activations per service, from the gateway's /metrics text."""
    arrivals: dict[str, float] = {}
    activations: dict[str, float] = {}
    responses: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            service = labels.get(SERVICE_SERIES_LABEL)
            if labels.get("namespace") != namespace or not service:
                continue
            if sample.name == "inferfleet_gateway_arrivals_total":
                arrivals[service] = sample.value
            elif sample.name == "inferfleet_gateway_activations_total":
                activations[service] = sample.value
            elif sample.name == "inferfleet_gateway_responses_total":
                responses.setdefault(service, {})[labels.get("code", "?")] = int(sample.value)
    return {
        name: GatewayCounts(
            int(arrivals.get(name, 0)), responses.get(name, {}), int(activations.get(name, 0))
        )
        for name in sorted(set(arrivals) | set(responses) | set(activations))
    }


def read_gateway_counters(metrics_url: str, namespace: str, timeout: float = 5.0) -> dict[str, GatewayCounts]:
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        return parse_gateway_counters(response.read().decode(), namespace)
