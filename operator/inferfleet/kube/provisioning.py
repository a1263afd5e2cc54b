"""IO of node autoscaling: is the ProvisioningRequest API served, create and delete requests.

A request and the PodTemplate it references are created, never applied: the request's spec is
immutable, and a PodTemplate of that name that this service does not control is left alone
(nor is a request made that would point the node autoscaler at someone else's pods).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.kube.apply import WRITES, is_served
from inferfleet.planning.names import FIELD_MANAGER
from inferfleet.planning.observed import is_controlled_by
from inferfleet.planning.provisioning import API_GROUP, API_VERSION, KIND, PLURAL


def is_provisioning_served(api: client.ApiClient) -> bool:
    """Whether the API server serves ProvisioningRequests."""
    return is_served(api, API_GROUP, API_VERSION, PLURAL)


def _template_is_ours(api: client.ApiClient, namespace: str, name: str, owner_uid: str) -> bool:
    current = client.CoreV1Api(api).read_namespaced_pod_template(name, namespace)
    return is_controlled_by(api.sanitize_for_serialization(current), owner_uid)


def create_provisioning_request(
    api: client.ApiClient, template: dict[str, Any], request: dict[str, Any], owner_uid: str
) -> bool:
    """Create the group's PodTemplate, then its request; False when a PodTemplate of that name
    belongs to someone else (nothing is created then)."""
    namespace, name = template["metadata"]["namespace"], template["metadata"]["name"]
    WRITES.labels("create", "PodTemplate").inc()
    try:
        client.CoreV1Api(api).create_namespaced_pod_template(namespace, template, field_manager=FIELD_MANAGER)
    except ApiException as e:
        if e.status != 409:
            raise
        if not _template_is_ours(api, namespace, name, owner_uid):
            return False
    WRITES.labels("create", KIND).inc()
    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, request, field_manager=FIELD_MANAGER
        )
    except ApiException as e:
        if e.status != 409:  # made by an earlier reconcile the index has not shown yet
            raise
    return True


def delete_provisioning_request(
    api: client.ApiClient, namespace: str, name: str, uid: str, owner_uid: str
) -> None:
    """Delete the request `uid` and its PodTemplate, if this service controls the template."""
    options = {"preconditions": {"uid": uid}}
    WRITES.labels("delete", KIND).inc()
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, body=options
        )
    except ApiException as e:
        if e.status not in (404, 409):
            raise
    try:
        if not _template_is_ours(api, namespace, name, owner_uid):
            return
        WRITES.labels("delete", "PodTemplate").inc()
        client.CoreV1Api(api).delete_namespaced_pod_template(name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise
