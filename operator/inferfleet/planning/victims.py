"""Which replicas a scale-down removes: those whose loss costs the least.

A Deployment's ReplicaSet removes, among its ready pods, the ones with the lowest
`controller.kubernetes.io/pod-deletion-cost` first. Before the autoscaler lowers a service's
single-pod replicas it ranks the pods by what their removal would lose: requests in flight first
(they must drain, and new ones then go elsewhere), then prefill saved by the pod's prefix cache
(cache hit tokens per second), so the replicas that stay keep the warm prefixes. The ranks become
the pods' deletion costs. Multi-node groups are not ranked: each is its own StatefulSet, removed
highest replica index first, so that the remaining groups keep their names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api import EngineKind
from inferfleet.planning.queue_queries import ENGINE_SIGNALS, SERVICE_SERIES_LABEL

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
POD_LABEL = "pod"
LOAD_LABEL = "inferfleet_load"
CACHE_WINDOW = "5m"
"""Prefix-cache warmth is the hit rate over this window: what the cache saved lately."""

# Prefix-cache hit counters, in tokens, where the engine exports one (SGLang and TGI do not).
CACHE_HIT_COUNTERS: dict[EngineKind, str] = {EngineKind.VLLM: "vllm:prefix_cache_hits_total"}


@dataclass(frozen=True, order=True)
class PodLoad:
    in_flight: float = 0.0
    """Requests running or waiting on the pod's engine."""
    cache_hit_rate: float = 0.0
    """Prompt tokens per second served from the prefix cache over CACHE_WINDOW."""


def _tagged(expr: str, load: str) -> str:
    return f'label_replace(sum by ({POD_LABEL}) ({expr}), "{LOAD_LABEL}", "{load}", "", "")'


def build_pod_load_query(namespace: str, service: str) -> str:
    """In-flight requests and cache hit rate of each of one service's pods, in one instant query."""
    selector = f'{{namespace="{namespace}", {SERVICE_SERIES_LABEL}="{service}"}}'
    parts = []
    for signals in ENGINE_SIGNALS.values():
        parts.append(_tagged(f"{signals.running}{selector} + {signals.waiting}{selector}", "in_flight"))
    for counter in CACHE_HIT_COUNTERS.values():
        parts.append(_tagged(f"rate({counter}{selector}[{CACHE_WINDOW}])", "cache_hit_rate"))
    return " or ".join(parts)


def parse_pod_loads(result: Iterable[Mapping[str, Any]]) -> dict[str, PodLoad]:
    """Loads by pod name; a pod without an in-flight series is left out (its load is unknown)."""
    values: dict[str, dict[str, float]] = {}
    for series in result:
        metric = series.get("metric") or {}
        pod, load = metric.get(POD_LABEL), metric.get(LOAD_LABEL)
        try:
            value = float((series.get("value") or [None, None])[1])
        except (TypeError, ValueError):
            continue
        if pod and load in ("in_flight", "cache_hit_rate") and math.isfinite(value) and value >= 0:
            values.setdefault(str(pod), {})[load] = value
    return {
        pod: PodLoad(v["in_flight"], v.get("cache_hit_rate", 0.0))
        for pod, v in values.items()
        if "in_flight" in v
    }


def compute_deletion_costs(loads: Mapping[str, PodLoad]) -> dict[str, int]:
    """Each pod's deletion cost: its rank from the cheapest loss (0) to the dearest; ties by name."""
    ranked = sorted(loads, key=lambda pod: (loads[pod], pod))
    return {pod: rank for rank, pod in enumerate(ranked)}


def plan_deletion_cost_patches(current: Mapping[str, str | None], costs: Mapping[str, int]) -> dict[str, int]:
    """The pods whose annotation must change (`current`: each pod's annotation value now).

    A pod without a known load (not scraped yet) gets the lowest cost: tied with the cheapest
    known pod, neither spared nor picked first on a guess."""
    floor = min(costs.values(), default=0)
    wanted = {pod: costs.get(pod, floor) for pod in current}
    return {pod: cost for pod, cost in wanted.items() if current.get(pod) != str(cost)}
