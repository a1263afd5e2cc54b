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
