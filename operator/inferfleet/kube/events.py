"""Kubernetes Events posted directly, for code that runs outside kopf's handlers (the autoscaler)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from inferfleet.planning.conditions import rfc3339

REPORTING_COMPONENT = "inferfleet"


def post_event(api: client.ApiClient, involved: Any, type_: str, reason: str, message: str) -> None:
    meta = involved["metadata"]
    now = rfc3339(datetime.now(UTC))
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": REPORTING_COMPONENT},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    client.CoreV1Api(api).create_namespaced_event(meta["namespace"], body)


def latest_failed_create(api: client.ApiClient, namespace: str, uid: str) -> str | None:
    """The newest FailedCreate Event message a controller posted on the object with this uid:
    why the API server refused the pods a StatefulSet tried to create (StatefulSets, unlike
    Deployments, have no ReplicaFailure condition)."""
    events = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid},reason=FailedCreate")
        .items
    )
    if not events:
        return None
    epoch = datetime.min.replace(tzinfo=UTC)
    newest = max(events, key=lambda e: e.last_timestamp or e.event_time or epoch)
    return str(newest.message or "pods cannot be created")
