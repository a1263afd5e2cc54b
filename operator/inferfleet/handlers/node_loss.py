"""IO when nodes or group members are lost: replace single pods now, restart broken groups whole."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client

from inferfleet.handlers.calls import ApplyError, call
from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.kube.apply import delete_group, delete_pod
from inferfleet.planning.groups import group_name


def replace_single_pods_on(
    api: client.ApiClient, view: ClusterView, node: str, logger: logging.Logger
) -> None:
    """A lost node's pods would wait out the 300 s eviction toleration: replace them now.

    Deleting the pod is enough: its Deployment schedules a new one on a healthy node. A cordoned
    node is not lost: its pods keep serving until a drain evicts them.
    """
    for (namespace, service), pod in view.single_pods_on(node):
        logger.warning(f"node {node} is lost; replacing pod {pod} of {service}")
        try:
            call(f"replacing pod {pod}", delete_pod, api, namespace, pod)
        except ApplyError as e:  # the lost node's next event retries
            logger.error(str(e))


def restart_group_of(
    api: client.ApiClient,
    view: ClusterView,
    key: Key,
    replica: int,
    pod: Mapping[str, Any],
    logger: logging.Logger,
) -> None:
    """A group member that went away breaks the group (ranks cannot rejoin): restart it whole.

    Only pods of the group's current StatefulSet count, so the restart's own deletions do not loop.
    """
    namespace, service = key
    owners = {ref.get("uid") for ref in pod.get("metadata", {}).get("ownerReferences") or []}
    snapshot = view.service(key)
    current = [g for g in view.groups_of(key) if g.replica == replica and g.uid in owners]
    if not current or snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
        return
    logger.warning(
        f"pod {pod['metadata']['name']} of replica group {replica} went away; restarting the group"
    )
    known = {("StatefulSet", group_name(service, replica)): current[0].uid}
    call(
        f"restarting replica group {replica}",
        delete_group, api, namespace, service, replica, snapshot["metadata"]["uid"], known,
    )  # fmt: skip
