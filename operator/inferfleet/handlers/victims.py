"""Before a scale-down: rank the service's pods so that its ReplicaSet removes the cheapest loss.

The ranking is pure (planning/victims.py); this reads each pod's load from Prometheus (one query
for the one service, only when it is about to shrink) and writes the pods' deletion costs. Any
failure leaves the ReplicaSet's own order: a scale-down is never held up for a ranking.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.kube.apply import api_error_message, apply_pod_deletion_cost
from inferfleet.metrics.prometheus import MetricsUnavailableError, QueueReader
from inferfleet.planning.victims import (
    build_pod_load_query,
    compute_deletion_costs,
    parse_pod_loads,
    plan_deletion_cost_patches,
)

log = logging.getLogger("inferfleet.autoscaler")


def apply_scale_down_ranking(
    api: client.ApiClient, reader: QueueReader, pods: kopf.Index[Any, Any], key: tuple[str, str]
) -> dict[str, int]:
    """Set the deletion costs of one service's Deployment pods; the costs written, by pod."""
    current = {p.name: p.deletion_cost for p in pods.get(key, []) if p.replica_set and not p.terminating}
    if len(current) < 2:
        return {}
    try:
        loads = parse_pod_loads(reader.query("pod-load", build_pod_load_query(*key)))
    except MetricsUnavailableError as e:
        log.info(f"{key[0]}/{key[1]}: scale-down without ranking the pods: {e}")
        return {}
    costs = compute_deletion_costs({pod: load for pod, load in loads.items() if pod in current})
    patches = plan_deletion_cost_patches(current, costs)
    for pod, cost in patches.items():
        try:
            apply_pod_deletion_cost(api, key[0], pod, cost)
        except ApiException as e:
            log.warning(f"{key[0]}/{key[1]}: pod {pod} keeps its deletion cost: {api_error_message(e)}")
    return patches
