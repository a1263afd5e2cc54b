"""Read kopf's peering object: who is alive, with which priority."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from inferfleet.runtime.config import PeeringConfig


def read_peers(api: Any, peering: PeeringConfig) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    if peering.namespace is None:
        obj = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering.name)
    else:
        obj = custom.get_namespaced_custom_object(
            "kopf.dev", "v1", peering.namespace, "kopfpeerings", peering.name
        )
    peers: dict[str, Any] = obj.get("status") or {}
    return peers
