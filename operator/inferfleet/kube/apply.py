"""Server-side apply of the objects the planners build, with field manager `inferfleet`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import Counter

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.planning.groups import group_name
from inferfleet.planning.names import FIELD_MANAGER

WRITES = Counter(
    "inferfleet_kube_writes_total",
    "Write requests the operator sent to the API server, by verb and kind.",
    ["verb", "kind"],
)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


def _patcher(api: client.ApiClient, kind: str) -> Callable[..., Any]:
    patchers: dict[str, Callable[..., Any]] = {
        "Deployment": client.AppsV1Api(api).patch_namespaced_deployment,
        "StatefulSet": client.AppsV1Api(api).patch_namespaced_stateful_set,
        "Service": client.CoreV1Api(api).patch_namespaced_service,
        "PodDisruptionBudget": client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget,
    }
    return patchers[kind]


def apply_object(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply `obj` (force: inferfleet owns these fields) and return the object the server stored."""
    meta = obj["metadata"]
    WRITES.labels("apply", obj["kind"]).inc()
    result = _patcher(api, obj["kind"])(
        meta["name"],
        meta["namespace"],
        obj,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type=APPLY_PATCH,
    )
    applied: dict[str, Any] = api.sanitize_for_serialization(result)
    return applied


def delete_group(api: client.ApiClient, namespace: str, service: str, replica: int) -> None:
    """Delete a replica group's StatefulSet (its pods go with it) and headless Service."""
    name = group_name(service, replica)
    deletes = {
        "StatefulSet": client.AppsV1Api(api).delete_namespaced_stateful_set,
        "Service": client.CoreV1Api(api).delete_namespaced_service,
    }
    for kind, delete in deletes.items():
        WRITES.labels("delete", kind).inc()
        try:
            delete(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise


def delete_pod(api: client.ApiClient, namespace: str, name: str) -> None:
    WRITES.labels("delete", "Pod").inc()
    try:
        client.CoreV1Api(api).delete_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise


def patch_inference_service_status(
    api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> None:
    WRITES.labels("patch", "InferenceService/status").inc()
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH
    )


def scale_inference_service(api: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    """Write spec.replicas through the scale subresource, as HPA does."""
    WRITES.labels("patch", "InferenceService/scale").inc()
    client.CustomObjectsApi(api).patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH
    )
