"""The node weights cache's volume, built: the claim `inferfleet-model-cache` in the namespace and
the `local` PersistentVolume at `<root>/<namespace>.<claim uid>` pre-bound to it, whose node
affinity is every node; whether a volume is one the operator may create; and, once its claim is
gone, the removal of its directories and the volume."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.planning.names import HOSTNAME_LABEL
from inferfleet.planning.weights_jobs import CacheSettings, build_cleanup_job
from inferfleet.planning.weights_naming import (
    CACHE_CLAIM,
    CACHE_LABEL,
    compute_volume_name,
    compute_volume_path,
    directory_job_name,
)


def build_cache_claim(namespace: str) -> dict[str, Any]:
    """The namespace's claim on its node caches; bound to its volume by name (volumeName), so no
    StorageClass and no provisioner take part."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CACHE_CLAIM, "namespace": namespace, "labels": {CACHE_LABEL: "volume"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def build_cache_volume(root: str, namespace: str, claim_uid: str) -> dict[str, Any]:
    """The namespace's `local` volume: the same path on every node, each node's own directory.

    Node affinity is every node (engine pods of one Deployment land on many nodes and share one
    claim). Retain: a local volume has no deleter, and no other claim can bind this volume; once
    its claim is gone, `plan_volume_cleanup` removes its directories and the volume."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": compute_volume_name(claim_uid), "labels": {CACHE_LABEL: "volume"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": CACHE_CLAIM,
                "uid": claim_uid,
            },
            "local": {"path": compute_volume_path(root, namespace, claim_uid)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "Exists"}]}
                    ]
                }
            },
        },
    }


def compute_volume_is_ours(volume: Mapping[str, Any], root: str) -> bool:
    """Whether a PersistentVolume is one this operator may create: a `local` path directly under
    the cache root, claimed by the cache claim of the namespace the path names."""
    spec = volume.get("spec") or {}
    path = str((spec.get("local") or {}).get("path") or "")
    claim = spec.get("claimRef") or {}
    namespace, uid = str(claim.get("namespace") or ""), str(claim.get("uid") or "")
    return (
        bool(namespace and uid)
        and set(spec) & {"hostPath", "nfs", "csi"} == set()
        and claim.get("name") == CACHE_CLAIM
        and path == compute_volume_path(root, namespace, uid)
        and "/" not in namespace + uid
        and ".." not in namespace + uid
        and volume.get("metadata", {}).get("name") == compute_volume_name(uid)
    )


@dataclass(frozen=True)
class VolumeCleanup:
    """What goes once a cache volume's claim is gone: in this order."""

    cleanup_jobs: tuple[dict[str, Any], ...] = ()
    """One per node that has the claim's directory (its directory Job made it)."""
    directory_jobs: tuple[str, ...] = ()
    """The claim's directory Jobs (operator's namespace), replaced by the cleanup Jobs."""
    volume: str | None = None
    """The PersistentVolume to delete."""


def plan_volume_cleanup(
    settings: CacheSettings,
    volume: Mapping[str, Any],
    current_claim_uid: str | None,
    nodes: Iterable[str],
    directory_jobs: Iterable[str],
) -> VolumeCleanup:
    """A cache volume `Released` (its claim deleted: the namespace went, or someone deleted the
    claim) and ours (`compute_volume_is_ours`): remove its directory on each of `nodes` whose
    directory Job for the claim exists, those Jobs, then the volume. `current_claim_uid`: the
    uid of the namespace's cache claim now (a new one, or None); the claim the volume names must
    not be it. Anything else: nothing."""
    claim = (volume.get("spec") or {}).get("claimRef") or {}
    namespace, uid = str(claim.get("namespace") or ""), str(claim.get("uid") or "")
    released = (volume.get("status") or {}).get("phase") == "Released"
    if not released or uid == current_claim_uid or not compute_volume_is_ours(volume, settings.root):
        return VolumeCleanup()
    made = set(directory_jobs)
    holding = sorted(node for node in set(nodes) if directory_job_name(uid, node) in made)
    return VolumeCleanup(
        cleanup_jobs=tuple(build_cleanup_job(settings, namespace, uid, node) for node in holding),
        directory_jobs=tuple(directory_job_name(uid, node) for node in holding),
        volume=str(volume["metadata"]["name"]),
    )
