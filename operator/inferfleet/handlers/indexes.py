"""kopf indexes: the operator's in-memory view of the cluster, kept by watches (no LIST per reconcile)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.planning.groups import group_key
from inferfleet.planning.inventory import GpuNode, build_gpu_node
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL
from inferfleet.planning.observed import ObservedGroup, pod_gpus
from inferfleet.planning.placement import BoundPod, Reservation

Key = tuple[str, str]


@kopf.index(GROUP, VERSION, PLURAL)
def inference_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    snapshot = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
    return {(namespace, name): snapshot}


@kopf.index("", "v1", "nodes")
def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, GpuNode] | None:
    node = build_gpu_node(body)
    return {node.name: node} if node else None


@kopf.index("", "v1", "pods")
def gpu_pods(spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels, namespace: str, **_: Any) -> Any:
    """GPUs held by pods bound to nodes, by node (pending pods hold nothing yet)."""
    node, gpus = spec.get("nodeName"), pod_gpus(spec)
    if not node or not gpus or status.get("phase") in ("Succeeded", "Failed"):
        return None
    replica = str(labels.get(REPLICA_LABEL, ""))
    group = (
        group_key(namespace, labels[SERVICE_LABEL], int(replica))
        if SERVICE_LABEL in labels and replica.isdigit()
        else None
    )
    return {node: BoundPod(node=node, gpus=gpus, group=group)}


@kopf.index("", "v1", "pods", labels={SERVICE_LABEL: kopf.PRESENT})
def engine_pods(name: str, namespace: str, spec: kopf.Spec, labels: kopf.Labels, **_: Any) -> Any:
    """Bound engine pods by service, for status.placement of single-pod replicas."""
    node = spec.get("nodeName")
    return {(namespace, labels[SERVICE_LABEL]): (name, node)} if node else None


@kopf.index("apps", "v1", "statefulsets", labels={SERVICE_LABEL: kopf.PRESENT})
def engine_groups(body: kopf.Body, **_: Any) -> dict[Key, ObservedGroup] | None:
    group = ObservedGroup.from_object(body)
    return {(group.namespace, group.service): group} if group else None


@dataclass(frozen=True)
class ClusterView:
    """The indexes one reconcile reads, flattened."""

    services: kopf.Index[Key, Any]
    nodes: kopf.Index[str, GpuNode]
    pods: kopf.Index[str, BoundPod]
    groups: kopf.Index[Key, ObservedGroup]
    service_pods: kopf.Index[Key, tuple[str, str]]

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> ClusterView:
        return cls(
            kwargs["inference_services"],
            kwargs["gpu_nodes"],
            kwargs["gpu_pods"],
            kwargs["engine_groups"],
            kwargs["engine_pods"],
        )

    def pods_of(self, key: Key) -> list[tuple[str, str]]:
        return list(self.service_pods.get(key, []))

    def node_domains(self, topology_key: str) -> dict[str, str]:
        return {n.name: n.labels.get(topology_key, "") for n in self.all_nodes()}

    def service(self, key: Key) -> Any | None:
        return next(iter(self.services.get(key, [])), None)

    def all_nodes(self) -> list[GpuNode]:
        return [node for _, values in self.nodes.items() for node in values]

    def all_bound(self) -> list[BoundPod]:
        return [pod for _, values in self.pods.items() for pod in values]

    def all_groups(self) -> list[ObservedGroup]:
        return [group for _, values in self.groups.items() for group in values]

    def groups_of(self, key: Key) -> list[ObservedGroup]:
        return list(self.groups.get(key, []))

    def reservations(self, exclude: frozenset[str] = frozenset()) -> list[Reservation]:
        return [
            Reservation(group=k, nodes=g.nodes, gpus_per_pod=g.gpus_per_pod)
            for g in self.all_groups()
            if (k := group_key(g.namespace, g.service, g.replica)) not in exclude
        ]
