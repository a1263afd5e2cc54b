"""IO of the node weights cache: create its claim, volume and Jobs (never update them: each is
made whole once; a name already taken is left as it is and the watch shows what it is)."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.kube.apply import WRITES
from inferfleet.planning.weights_naming import CACHE_CLAIM, WARM_LABEL_PREFIX
from inferfleet.planning.weights_volume import compute_volume_is_ours


class VolumeRefusedError(Exception):
    """A PersistentVolume this operator must not create (not under its root, not its claim)."""


def apply_cache_claim(api: client.ApiClient, claim: dict[str, Any]) -> str:
    """Create the namespace's cache claim unless it exists; its uid."""
    core = client.CoreV1Api(api)
    namespace = claim["metadata"]["namespace"]
    WRITES.labels("create", "PersistentVolumeClaim").inc()
    try:
        created = core.create_namespaced_persistent_volume_claim(namespace, claim)
    except ApiException as e:
        if e.status != 409:
            raise
        created = core.read_namespaced_persistent_volume_claim(CACHE_CLAIM, namespace)
    return str(created.metadata.uid)


def apply_cache_volume(api: client.ApiClient, volume: dict[str, Any], root: str) -> None:
    """Create a cache volume; only one whose local path is its claim's directory under `root`
    (the chart lets the operator create PersistentVolumes: this is the one kind it creates)."""
    if not compute_volume_is_ours(volume, root):
        raise VolumeRefusedError(f"refusing to create PersistentVolume {volume['metadata'].get('name')}")
    WRITES.labels("create", "PersistentVolume").inc()
    try:
        client.CoreV1Api(api).create_persistent_volume(volume)
    except ApiException as e:
        if e.status != 409:
            raise


def delete_cache_volume(api: client.ApiClient, volume: dict[str, Any], root: str) -> None:
    """Delete a cache volume whose claim is gone; only one this operator could have created
    (`compute_volume_is_ours`, as for creating), and only as it was read (its uid: a volume of
    that name made again since is not this one). A volume already gone is fine."""
    if not compute_volume_is_ours(volume, root):
        raise VolumeRefusedError(f"refusing to delete PersistentVolume {volume['metadata'].get('name')}")
    meta = volume["metadata"]
    WRITES.labels("delete", "PersistentVolume").inc()
    try:
        client.CoreV1Api(api).delete_persistent_volume(
            meta["name"], body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=meta["uid"]))
        )
    except ApiException as e:
        if e.status not in (404, 409):  # gone, or another volume of that name now
            raise


def apply_job(api: client.ApiClient, job: dict[str, Any]) -> bool:
    """Create a Job unless one of that name exists; whether it was created."""
    WRITES.labels("create", "Job").inc()
    try:
        client.BatchV1Api(api).create_namespaced_job(job["metadata"]["namespace"], job)
    except ApiException as e:
        if e.status != 409:
            raise
        return False
    return True


class LabelRefusedError(Exception):
    """A node label this operator must not set or remove (not its warm-weights prefix)."""


def apply_node_labels(api: client.ApiClient, node: str, labels: dict[str, str | None]) -> None:
    """Set (a value) or remove (None) the node's warm-weights labels; only those: the chart lets
    the operator patch nodes for them, and a label of any other prefix is refused here."""
    refused = [k for k in labels if not k.startswith(WARM_LABEL_PREFIX) or "/" in k[len(WARM_LABEL_PREFIX) :]]
    if refused or not labels:
        raise LabelRefusedError(f"refusing to patch labels {refused} of node {node}")
    WRITES.labels("patch", "Node").inc()
    try:
        client.CoreV1Api(api).patch_node(node, {"metadata": {"labels": labels}})
    except ApiException as e:
        if e.status != 404:  # a node gone needs no label
            raise


def delete_job(api: client.ApiClient, namespace: str, name: str) -> None:
    """Delete a Job and its pods (a name already gone is fine)."""
    WRITES.labels("delete", "Job").inc()
    try:
        client.BatchV1Api(api).delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as e:
        if e.status != 404:
            raise
