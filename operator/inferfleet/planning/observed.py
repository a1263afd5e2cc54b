"""Observed child objects, reduced to what the planners need (built from plain object dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api import GROUP, KIND
from inferfleet.planning.groups import PLACEMENT_DOMAIN_ANNOTATION, PLACEMENT_NODES_ANNOTATION
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL

GPU_RESOURCE = "nvidia.com/gpu"


def _gpus(resources: Mapping[str, Any] | None) -> int:
    resources = resources or {}
    value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(
        GPU_RESOURCE
    )
    try:
        return int(str(value or 0))
    except ValueError:
        return 0


def pod_gpus(pod_spec: Mapping[str, Any]) -> int:
    return sum(_gpus(c.get("resources")) for c in pod_spec.get("containers") or [])


def controller_uid(meta: Mapping[str, Any] | None) -> str:
    """The uid of the InferenceService that controls the object with this metadata, "" for none.

    Labels and annotations anyone may write; a controller ownerReference carrying an existing
    InferenceService's uid only that service's children have (the garbage collector would delete
    an object that names a uid that does not exist)."""
    for ref in (meta or {}).get("ownerReferences") or []:
        api_group = str(ref.get("apiVersion", "")).split("/")[0]
        if ref.get("controller") is True and ref.get("kind") == KIND and api_group == GROUP:
            return str(ref.get("uid") or "")
    return ""


def is_controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    return bool(uid) and controller_uid(obj.get("metadata")) == uid


def pod_controller_uid(meta: Mapping[str, Any] | None) -> str:
    """The uid of the object (of any kind) that controls a pod, "" for none."""
    return next(
        (str(r.get("uid") or "") for r in (meta or {}).get("ownerReferences") or [] if r.get("controller")),
        "",
    )


@dataclass(frozen=True)
class ObservedGroup:
    """One multi-node replica group, as its StatefulSet shows it."""

    namespace: str
    service: str
    replica: int
    uid: str
    domain: str
    nodes: tuple[str, ...]
    gpus_per_pod: int
    pods: int
    ready_pods: int
    generation: int
    observed_generation: int
    created_pods: int = 0
    owner_uid: str = ""
    """The uid of the InferenceService controlling the StatefulSet ("" when none does)."""

    @property
    def ready(self) -> bool:
        return self.ready_pods >= self.pods and self.observed_generation >= self.generation

    @property
    def pods_missing(self) -> bool:
        """The StatefulSet controller has synced this generation and still lacks pods: with the
        Parallel pod policy it creates every member in one pass, so a shortfall means the API
        server refused some (Pod Security, a ResourceQuota; the reason is in its Events)."""
        return self.observed_generation >= self.generation and self.created_pods < self.pods

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedGroup | None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        if SERVICE_LABEL not in labels or not str(labels.get(REPLICA_LABEL, "")).isdigit():
            return None
        status = obj.get("status") or {}
        nodes = annotations.get(PLACEMENT_NODES_ANNOTATION, "")
        return cls(
            namespace=str(meta.get("namespace", "")),
            service=labels[SERVICE_LABEL],
            replica=int(labels[REPLICA_LABEL]),
            uid=str(meta.get("uid", "")),
            domain=annotations.get(PLACEMENT_DOMAIN_ANNOTATION, ""),
            nodes=tuple(n for n in nodes.split(",") if n),
            gpus_per_pod=pod_gpus(template.get("spec") or {}),
            pods=int(spec.get("replicas") or 0),
            ready_pods=int(status.get("readyReplicas") or 0),
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            created_pods=int(status.get("replicas") or 0),
            owner_uid=controller_uid(meta),
        )
