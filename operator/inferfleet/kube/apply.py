"""Server-side apply of the objects the planners build, with field manager `inferfleet`.

A child is applied (with force: inferfleet owns its fields) only once the service is known to
control it. Any other is created by an apply that carries a resourceVersion no object can have
(CREATE_ONLY_RESOURCE_VERSION): the API server creates it when the name is free and refuses with
409 when any object has it, changing nothing. That object is applied only if this service
controls it, and otherwise left untouched: NameConflict. Deletions carry a uid precondition of an
object this service controls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import Counter

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.planning.groups import group_name
from inferfleet.planning.inference_pool import API_GROUP as POOL_GROUP
from inferfleet.planning.inference_pool import API_VERSION as POOL_VERSION
from inferfleet.planning.inference_pool import KIND as POOL_KIND
from inferfleet.planning.inference_pool import PLURAL as POOL_PLURAL
from inferfleet.planning.names import FIELD_MANAGER
from inferfleet.planning.observed import is_controlled_by
from inferfleet.planning.victims import DELETION_COST_ANNOTATION

WRITES = Counter(
    "inferfleet_kube_writes_total",
    "Write requests the operator sent to the API server, by verb and kind.",
    ["verb", "kind"],
)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CREATE_ONLY_RESOURCE_VERSION = str(2**63 - 1)
"""An apply naming this resourceVersion creates an absent object and is refused (409 Conflict,
nothing written) when one exists. The API server checks an update's resourceVersion against the
stored one (an etcd revision: it would take 2**63 - 1 writes to reach this one), and the
create-on-apply path ignores it (registry/generic/registry/store.go Update, then the storage's
PrepareObjectForStorage). So one request creates a child with Apply ownership, where a POST
needs a second one to hand its Update ownership over (later applies must be able to remove
fields)."""


class NameConflictError(Exception):
    """A child's name is taken by an object this service does not control."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        super().__init__(
            f"{kind} {name} already exists and is not controlled by this InferenceService; "
            f"it is left untouched (rename the service or remove that {kind})"
        )


def api_error_message(e: ApiException) -> str:
    """The API server's own words for a refused request (the `message` of its Status body, e.g.
    'Service "llama.v3" is invalid: metadata.name: Invalid value: ...'), else status and reason."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message) if message else f"{e.status} {e.reason}"


class _InferencePools:
    """InferencePools (a custom resource) behind the typed clients' `<verb>_namespaced_<resource>`."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = client.CustomObjectsApi(api)

    def patch_namespaced_pool(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        return self.api.patch_namespaced_custom_object(
            POOL_GROUP, POOL_VERSION, namespace, POOL_PLURAL, name, body, **kwargs
        )

    def read_namespaced_pool(self, name: str, namespace: str) -> Any:
        return self.api.get_namespaced_custom_object(POOL_GROUP, POOL_VERSION, namespace, POOL_PLURAL, name)


def _verb(api: client.ApiClient, kind: str, verb: str) -> Callable[..., Any]:
    apis: dict[str, tuple[Any, str]] = {
        "Deployment": (client.AppsV1Api(api), "deployment"),
        "StatefulSet": (client.AppsV1Api(api), "stateful_set"),
        "Service": (client.CoreV1Api(api), "service"),
        "PodDisruptionBudget": (client.PolicyV1Api(api), "pod_disruption_budget"),
        POOL_KIND: (_InferencePools(api), "pool"),
    }
    target, resource = apis[kind]
    fn: Callable[..., Any] = getattr(target, f"{verb}_namespaced_{resource}")
    return fn


def _patcher(api: client.ApiClient, kind: str) -> Callable[..., Any]:
    return _verb(api, kind, "patch")


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


def is_served(api: client.ApiClient, group: str, version: str, plural: str) -> bool:
    """Whether the API server serves `plural` in `group/version` (discovery: any identity may
    read it)."""
    try:
        resources = client.CustomObjectsApi(api).get_api_resources(group, version)
    except ApiException as e:
        if e.status in (403, 404, 503):
            return False
        raise
    return any(r.name == plural for r in (resources.resources if resources else []) or [])


def is_inference_pool_served(api: client.ApiClient) -> bool:
    """Whether the API server serves InferencePools (planning/inference_pool.py)."""
    return is_served(api, POOL_GROUP, POOL_VERSION, POOL_PLURAL)


def read_object(api: client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        result = _verb(api, kind, "read")(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    obj: dict[str, Any] = api.sanitize_for_serialization(result)
    return obj


def _create(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    """Create `obj` by an apply that only creates; None when an object of that name exists."""
    meta = obj["metadata"]
    create_only = {**obj, "metadata": {**meta, "resourceVersion": CREATE_ONLY_RESOURCE_VERSION}}
    WRITES.labels("create", obj["kind"]).inc()
    try:
        result = _patcher(api, obj["kind"])(
            meta["name"],
            meta["namespace"],
            create_only,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        )
    except ApiException as e:
        if e.status == 409:  # the stored object's resourceVersion is not ours: it exists
            return None
        raise
    created: dict[str, Any] = api.sanitize_for_serialization(result)
    return created


def _hand_over(api: client.ApiClient, kind: str, current: dict[str, Any]) -> None:
    """Turn a POST's field ownership (the Update entry of a child an earlier inferfleet version
    created) into an apply's, so that a field a later apply leaves out is removed (fields an
    Update entry owns would stay forever). No request when there is no such entry. The `test`
    operations make this a no-op failure if another writer moved the entries meanwhile."""
    meta = current["metadata"]
    entries = meta.get("managedFields") or []
    index = next(
        (
            i
            for i, m in enumerate(entries)
            if m.get("manager") == FIELD_MANAGER and m.get("operation") == "Update"
        ),
        None,
    )
    if index is None:
        return
    path = f"/metadata/managedFields/{index}"
    patch = [
        {"op": "test", "path": f"{path}/manager", "value": FIELD_MANAGER},
        {"op": "test", "path": f"{path}/operation", "value": "Update"},
        {"op": "replace", "path": f"{path}/operation", "value": "Apply"},
    ]
    WRITES.labels("patch", kind).inc()
    try:
        _patcher(api, kind)(meta["name"], meta["namespace"], patch, _content_type=JSON_PATCH)
    except ApiException as e:
        if e.status not in (404, 409, 422):
            raise


def apply_child(api: client.ApiClient, obj: dict[str, Any], owner_uid: str, known: bool) -> dict[str, Any]:
    """Apply a child of the InferenceService `owner_uid` and return the object the server stored.

    `known`: this process saw the service control it, so apply it at once (one request, as in
    the steady state). Otherwise create it (one request as well); if its name is taken, apply
    only when the object there is controlled by this service, else raise NameConflictError and
    change nothing."""
    if known:
        return apply_object(api, obj)
    created = _create(api, obj)
    if created is not None:
        return created
    meta = obj["metadata"]
    current = read_object(api, obj["kind"], meta["namespace"], meta["name"])
    if current is None:  # deleted since: the next reconcile creates it
        raise ApiException(status=409, reason=f"{obj['kind']} {meta['name']} was deleted while being created")
    if not is_controlled_by(current, owner_uid):
        raise NameConflictError(obj["kind"], meta["name"])
    _hand_over(api, obj["kind"], current)
    return apply_object(api, obj)


def delete_controlled(
    api: client.ApiClient, kind: str, namespace: str, name: str, owner_uid: str, uid: str | None = None
) -> None:
    """Delete the object if the service `owner_uid` controls it: `uid`, when given, is the uid of
    the object known to be its child; otherwise it is read and checked. The uid precondition
    makes the API server refuse if the name now belongs to another object."""
    if uid is None:
        current = read_object(api, kind, namespace, name)
        if current is None or not is_controlled_by(current, owner_uid):
            return
        uid = current["metadata"]["uid"]
    WRITES.labels("delete", kind).inc()
    options = {"preconditions": {"uid": uid}}
    try:
        _verb(api, kind, "delete")(name, namespace, propagation_policy="Background", body=options)
    except ApiException as e:
        if e.status not in (404, 409):  # 409: the precondition failed, the name is another's now
            raise


def delete_group(
    api: client.ApiClient,
    namespace: str,
    service: str,
    replica: int,
    owner_uid: str,
    known: Mapping[tuple[str, str], str] | None = None,
) -> None:
    """Delete a replica group's StatefulSet (its pods go with it) and headless Service, if the
    service `owner_uid` controls them; `known` maps (kind, name) to the uids of known children."""
    name = group_name(service, replica)
    for kind in ("StatefulSet", "Service"):
        delete_controlled(api, kind, namespace, name, owner_uid, (known or {}).get((kind, name)))


def delete_pod(api: client.ApiClient, namespace: str, name: str) -> None:
    WRITES.labels("delete", "Pod").inc()
    try:
        client.CoreV1Api(api).delete_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise


def apply_pod_deletion_cost(api: client.ApiClient, namespace: str, name: str, cost: int) -> None:
    """Annotate a replica's pod with the cost its ReplicaSet weighs when it removes pods."""
    WRITES.labels("patch", "Pod").inc()
    patch = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}}
    try:
        client.CoreV1Api(api).patch_namespaced_pod(name, namespace, patch)
    except ApiException as e:
        if e.status != 404:  # gone meanwhile: nothing left to rank
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


JSON_PATCH = "application/json-patch+json"


def scale_from_zero(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Raise spec.replicas from 0 to 1 through the scale subresource; False if it was not 0.

    The patch tests the current value first, so a gateway never overwrites what the autoscaler
    (or another gateway replica) wrote in the meantime. The Scale (autoscaling/v1) omits
    `replicas` when it is 0, so "at zero" is a spec that is the empty object.
    """
    patch = [
        {"op": "test", "path": "/spec", "value": {}},
        {"op": "add", "path": "/spec/replicas", "value": 1},
    ]
    try:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH
        )
    except ApiException as e:
        if e.status == 422:  # the test failed: replicas is not 0 any more
            return False
        raise
    return True
