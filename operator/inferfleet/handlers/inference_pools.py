"""A service's InferencePool (planning/inference_pool.py): added to its plan where the cluster
serves the API, and applied without ever failing the service's reconcile.

The pool is for other gateways; the service serves without it. A failed discovery leaves it out
of this reconcile. A pool the API server refuses, or whose name another object holds, is a
Warning Event (once per reason) and a log line; a name conflict is looked at again later
(planning/requeue.py). An API removed since it was discovered (its CRD deleted) is asked about
again on the next reconcile, and the pool is no longer known as this service's: after a reinstall
its name may be someone else's. The CRD's own events re-enqueue every service
(handlers/watches.py), so an API installed after the services exist is noticed at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from inferfleet.api.status import EventReason
from inferfleet.handlers.calls import ApplyError, call
from inferfleet.kube.apply import NameConflictError, api_error_message, apply_child, is_inference_pool_served
from inferfleet.kube.events import post_event
from inferfleet.planning.inference_pool import KIND, plan_inference_pool
from inferfleet.planning.service import ServicePlan
from inferfleet.runtime.operator import OperatorRuntime
from inferfleet.runtime.state import ServiceState

log = logging.getLogger(__name__)


def plan_with_inference_pool(runtime: OperatorRuntime, service: str, plan: ServicePlan) -> ServicePlan:
    """`plan` with the service's InferencePool when pools are on and the cluster serves them."""
    if not runtime.config.inference_pools:
        return plan
    try:
        served = runtime.inference_pools_served.get(
            lambda: call("discovering InferencePools", is_inference_pool_served, runtime.api)
        )
    except ApplyError as e:
        log.warning(f"{e}: no InferencePool in this reconcile")
        return plan
    return plan_inference_pool(plan, service, runtime.config.endpoint_picker) if served else plan


def apply_inference_pool(
    runtime: OperatorRuntime, body: Mapping[str, Any], state: ServiceState, pool: dict[str, Any]
) -> bool:
    """Apply the pool; False when another object holds its name (to be looked at again later)."""
    key = (KIND, pool["metadata"]["name"])
    try:
        applied = apply_child(runtime.api, pool, body["metadata"]["uid"], key in state.children)
    except ApiException as e:
        if e.status in (404, 405):  # the API is gone, or its CRD is being deleted
            runtime.inference_pools_served.forget()
            state.forget_child(*key)
            return True
        _warn(runtime, body, state, f"the API server refused it ({e.status}): {api_error_message(e)}")
        return True
    except NameConflictError as e:
        _warn(runtime, body, state, str(e))
        return False
    state.know_child(applied)
    state.pool_warning = None
    return True


def _warn(runtime: OperatorRuntime, body: Mapping[str, Any], state: ServiceState, why: str) -> None:
    message = f"InferencePool not applied: {why}"
    log.warning(f"{body['metadata'].get('namespace')}/{body['metadata']['name']}: {message}")
    if state.pool_warning == why:
        return
    try:
        post_event(runtime.api, body, "Warning", EventReason.INFERENCE_POOL_NOT_APPLIED, message)
    except ApiException as e:
        log.warning(f"posting {message!r}: {e.status} {e.reason}")
        return
    state.pool_warning = why
