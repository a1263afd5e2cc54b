"""Server-side apply of the objects the planners build, with field manager `inferfleet`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.planning.names import FIELD_MANAGER

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


def _patcher(api: client.ApiClient, kind: str) -> Callable[..., Any]:
    patchers: dict[str, Callable[..., Any]] = {
        "Deployment": client.AppsV1Api(api).patch_namespaced_deployment,
        "Service": client.CoreV1Api(api).patch_namespaced_service,
        "PodDisruptionBudget": client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget,
    }
    return patchers[kind]


def apply_object(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply `obj` (force: inferfleet owns these fields) and return the object the server stored."""
    meta = obj["metadata"]
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


def patch_inference_service_status(
    api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH
    )
