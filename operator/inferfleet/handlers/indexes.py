"""kopf indexes: the operator's in-memory view of the cluster, kept by watches (no LIST per reconcile)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import kopf

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.planning.groups import group_key
from inferfleet.planning.inventory import GpuNode, build_gpu_node
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL
from inferfleet.planning.observed import ObservedGroup, pod_controller_uid, pod_gpus
from inferfleet.planning.placement import BoundPod, Reservation
from inferfleet.planning.policy import TenantPolicy
from inferfleet.planning.provisioning import ObservedRequest, build_observed_request, consumed_request
from inferfleet.planning.stuck import UnschedulableMember, build_unschedulable_member, is_unschedulable
from inferfleet.planning.victims import DELETION_COST_ANNOTATION
from inferfleet.planning.weights_naming import ACTION_LABEL, CACHE_CLAIM, CACHE_LABEL, METADATA_ACTION
from inferfleet.planning.weights_observed import (
    CacheObserved,
    FetchResult,
    ObservedFetch,
    build_fetch_result,
    build_observed_fetch,
    build_observed_metadata,
)
from inferfleet.runtime.config import OperatorConfig

Key = tuple[str, str]
CACHE_INDEXES = (
    "cache_claims", "cache_volumes", "fetch_jobs", "directory_jobs", "fetch_results", "metadata_jobs",
)  # fmt: skip


@kopf.index(GROUP, VERSION, PLURAL)
def inference_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    snapshot = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        # managedFields is most of an object's size and nothing here reads it.
        "metadata": {k: v for k, v in body.metadata.items() if k != "managedFields"},
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
    return {(namespace, name): snapshot}


@kopf.index("", "v1", "nodes")
def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, GpuNode] | None:
    node = build_gpu_node(body)
    return {node.name: node} if node else None


@dataclass(frozen=True)
class GpuPod:
    pod: BoundPod
    owner_uid: str
    """The uid of the pod's controller: a group member's is its StatefulSet's."""


@kopf.index("", "v1", "pods")
def gpu_pods(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, labels: kopf.Labels, namespace: str, **_: Any
) -> Any:
    """GPUs held by pods bound to nodes, by node (pending pods hold nothing yet). Whoever made a
    bound pod, its GPUs are taken; the group its labels claim counts only if its controller is
    that group's StatefulSet (see ClusterView.all_bound)."""
    node, gpus = spec.get("nodeName"), pod_gpus(spec)
    if not node or not gpus or status.get("phase") in ("Succeeded", "Failed"):
        return None
    replica = str(labels.get(REPLICA_LABEL, ""))
    group = (
        group_key(namespace, labels[SERVICE_LABEL], int(replica))
        if SERVICE_LABEL in labels and replica.isdigit()
        else None
    )
    return {node: GpuPod(BoundPod(node=node, gpus=gpus, group=group), pod_controller_uid(meta))}


@dataclass(frozen=True)
class EnginePod:
    name: str
    node: str
    in_group: bool
    terminating: bool
    replica_set: bool = False
    """Controlled by a ReplicaSet (a Deployment's pod), not made by hand."""
    deletion_cost: str | None = None
    """Its pod-deletion-cost annotation, as the autoscaler last set it before a scale-down."""


@kopf.index("", "v1", "pods", labels={SERVICE_LABEL: kopf.PRESENT})
def engine_pods(
    name: str, namespace: str, meta: kopf.Meta, spec: kopf.Spec, labels: kopf.Labels, **_: Any
) -> Any:
    """Bound engine pods by service: status.placement of single-pod replicas, and node loss."""
    node = spec.get("nodeName")
    terminating = bool(meta.get("deletionTimestamp"))
    replica_set = any(
        ref.get("controller") and ref.get("kind") == "ReplicaSet" for ref in meta.get("ownerReferences") or []
    )
    cost = (meta.get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    pod = EnginePod(name, node, REPLICA_LABEL in labels, terminating, replica_set, cost) if node else None
    return {(namespace, labels[SERVICE_LABEL]): pod} if pod else None


@kopf.index("", "v1", "pods", labels={SERVICE_LABEL: kopf.PRESENT, REPLICA_LABEL: kopf.PRESENT})
def stuck_group_pods(
    namespace: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels, **_: Any
) -> Any:
    """Group members the scheduler refused to put on their planned node, by service."""
    if not is_unschedulable(spec, status) or not str(labels[REPLICA_LABEL]).isdigit():
        return None
    member = build_unschedulable_member(
        int(labels[REPLICA_LABEL]), pod_controller_uid(meta), status.get("conditions") or []
    )
    return {(namespace, labels[SERVICE_LABEL]): member} if member else None


@kopf.index("apps", "v1", "statefulsets", labels={SERVICE_LABEL: kopf.PRESENT})
def engine_groups(body: kopf.Body, **_: Any) -> dict[Key, ObservedGroup] | None:
    group = ObservedGroup.from_object(body)
    return {(group.namespace, group.service): group} if group else None


@kopf.index(
    "autoscaling.x-k8s.io",
    "v1",
    "provisioningrequests",
    labels={SERVICE_LABEL: kopf.PRESENT},
)
def provisioning_requests(body: kopf.Body, **_: Any) -> dict[Key, ObservedRequest] | None:
    """The services' ProvisioningRequests (none where the cluster does not serve the API)."""
    request = build_observed_request(body)
    return (
        {(body["metadata"]["namespace"], body["metadata"]["labels"][SERVICE_LABEL]): request}
        if request
        else None
    )


@kopf.index("apps", "v1", "statefulsets", labels={SERVICE_LABEL: kopf.PRESENT})
def consuming_groups(body: kopf.Body, **_: Any) -> dict[Key, tuple[int, str]] | None:
    """Groups whose pods consume a ProvisioningRequest: (replica, request), by service."""
    group = ObservedGroup.from_object(body)
    template = (body.get("spec") or {}).get("template") or {}
    request = consumed_request((template.get("metadata") or {}).get("annotations") or {})
    return {(group.namespace, group.service): (group.replica, request)} if group and request else None


@kopf.index("", "v1", "persistentvolumeclaims", labels={CACHE_LABEL: "volume"})
def cache_claims(name: str, namespace: str, meta: kopf.Meta, **_: Any) -> dict[str, str] | None:
    """The node weights cache's claim of each namespace: its uid."""
    return {namespace: str(meta["uid"])} if name == CACHE_CLAIM else None


@kopf.index("", "v1", "persistentvolumes", labels={CACHE_LABEL: "volume"})
def cache_volumes(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str] | None:
    """The cache volumes, by the uid of the claim they are bound to."""
    uid = (spec.get("claimRef") or {}).get("uid")
    return {str(uid): name} if uid else None


@kopf.index("batch", "v1", "jobs", labels={CACHE_LABEL: "fetch"})
def fetch_jobs(namespace: str, body: kopf.Body, **_: Any) -> dict[str, ObservedFetch] | None:
    fetch = build_observed_fetch(body)
    return {namespace: fetch} if fetch else None


@kopf.index("batch", "v1", "jobs", labels={CACHE_LABEL: "fetch", ACTION_LABEL: METADATA_ACTION})
def metadata_jobs(namespace: str, body: kopf.Body, **_: Any) -> dict[str, ObservedFetch] | None:
    """The Jobs reading a model's facts without its weights (their pods are fetch pods: results)."""
    read = build_observed_metadata(body)
    return {namespace: read} if read else None


@kopf.index("batch", "v1", "jobs", labels={CACHE_LABEL: "directory"})
def directory_jobs(namespace: str, name: str, **_: Any) -> dict[str, str]:
    return {namespace: name}


@kopf.index("", "v1", "pods", labels={CACHE_LABEL: "fetch"})
def fetch_results(namespace: str, labels: kopf.Labels, status: kopf.Status, **_: Any) -> Any:
    """The JSON result each terminated fetch pod left, by (namespace, Job)."""
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    result = build_fetch_result(status) if job else None
    return {(namespace, job): result} if result else None


@dataclass(frozen=True)
class ClusterView:
    """The indexes one reconcile reads, flattened."""

    services: kopf.Index[Key, Any]
    nodes: kopf.Index[str, GpuNode]
    pods: kopf.Index[str, GpuPod]
    groups: kopf.Index[Key, ObservedGroup]
    service_pods: kopf.Index[Key, EnginePod]
    stuck: kopf.Index[Key, UnschedulableMember]
    scheduler_name: str | None = None
    """The operator's --scheduler-name: the kube-scheduler profile of single-pod replicas."""
    policy: TenantPolicy | None = None
    """What the installation allows engine pods (chart values `policy.*`); None: the defaults."""
    cache: tuple[Any, ...] = ()
    """The node weights cache's indexes: claims, volumes, fetch Jobs, directory Jobs, results."""
    provisioning: tuple[Any, ...] = ()
    """ProvisioningRequests and the groups consuming one (planning/provisioning.py)."""

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], config: OperatorConfig) -> ClusterView:
        return cls(
            kwargs["inference_services"],
            kwargs["gpu_nodes"],
            kwargs["gpu_pods"],
            kwargs["engine_groups"],
            kwargs["engine_pods"],
            kwargs["stuck_group_pods"],
            config.scheduler_name,
            config.policy,
            tuple(kwargs.get(name) for name in CACHE_INDEXES),
            (kwargs.get("provisioning_requests"), kwargs.get("consuming_groups")),
        )

    def provisioning_requests_of(self, key: Key) -> list[ObservedRequest]:
        index = self.provisioning[0] if self.provisioning else None
        return list(index.get(key, [])) if index is not None else []

    def consuming_groups_of(self, key: Key) -> dict[int, str]:
        """The request each of the service's groups consumes, by replica (its controller unchecked:
        an annotation only keeps a group's pod template as it is)."""
        index = self.provisioning[1] if len(self.provisioning) > 1 else None
        return dict(index.get(key, [])) if index is not None else {}

    def cache_of(self, namespace: str, operator_namespace: str) -> CacheObserved:
        """The node weights cache of `namespace`, as watched (empty when the cache is off)."""
        if not self.cache or any(index is None for index in self.cache):
            return CacheObserved()
        claims, volumes, fetches, directories, results, reads = self.cache
        uid = next(iter(claims.get(namespace, [])), None)
        found: list[ObservedFetch] = list(fetches.get(namespace, []))
        metadata: list[ObservedFetch] = list(reads.get(namespace, []))
        return CacheObserved(
            claim_uid=uid,
            volume_exists=uid is not None and bool(volumes.get(uid)),
            directory_jobs=frozenset(directories.get(operator_namespace, [])),
            fetches=tuple(found),
            results={
                f.name: r
                for f in (*found, *metadata)
                for r in list(results.get((namespace, f.name), []))[-1:]
            },
            metadata=tuple(metadata),
        )

    def all_fetches(self) -> list[tuple[str, ObservedFetch]]:
        """(namespace, fetch or eviction Job) of the node weights cache in every namespace."""
        if len(self.cache) < 5 or self.cache[2] is None:
            return []
        return [(ns, f) for ns, fetches in self.cache[2].items() for f in fetches]

    def all_fetch_results(self) -> dict[tuple[str, str], FetchResult]:
        """The latest result of each fetch or eviction Job, by (namespace, Job)."""
        if len(self.cache) < 5 or self.cache[4] is None:
            return {}
        return {key: r for key, results in self.cache[4].items() for r in list(results)[-1:]}

    def cache_claim_uid(self, namespace: str) -> str | None:
        if len(self.cache) < 5 or self.cache[0] is None:
            return None
        return next(iter(self.cache[0].get(namespace, [])), None)

    def all_services(self) -> dict[Key, Any]:
        return {key: s for key in list(self.services) if (s := self.service(key)) is not None}

    def all_engine_pods(self) -> list[tuple[Key, str]]:
        """(service, node) of every bound engine pod, terminating ones too."""
        return [(key, p.node) for key, pods in self.service_pods.items() for p in pods]

    def pods_of(self, key: Key) -> list[tuple[str, str]]:
        """(pod, node) of the service's bound engine pods that are not being deleted."""
        return [(p.name, p.node) for p in self.service_pods.get(key, []) if not p.terminating]

    def single_pods_on(self, node: str) -> list[tuple[Key, str]]:
        """(service, pod) of live services' single-pod replicas bound to `node` (group members
        restart with their group; pods made by hand are not the operator's to replace)."""
        return [
            (key, pod.name)
            for key, pods in self.service_pods.items()
            if self.service(key) is not None
            for pod in pods
            if pod.node == node and pod.replica_set and not pod.in_group and not pod.terminating
        ]

    def node_domains(self, topology_key: str) -> dict[str, str]:
        return {n.name: n.labels.get(topology_key, "") for n in self.all_nodes()}

    def node(self, name: str) -> GpuNode | None:
        return next(iter(self.nodes.get(name, [])), None)

    def service(self, key: Key) -> Any | None:
        return next(iter(self.services.get(key, [])), None)

    def all_nodes(self) -> list[GpuNode]:
        return [node for _, values in self.nodes.items() for node in values]

    def unschedulable_members(self, key: Key) -> list[UnschedulableMember]:
        """The service's group members the scheduler refused to bind."""
        return list(self.stuck.get(key, []))

    def lost_nodes(self) -> set[str]:
        """GPU nodes that are not Ready (cordoned ones are not lost)."""
        return {node.name for node in self.all_nodes() if not node.ready}

    def all_bound(self) -> list[BoundPod]:
        """Every bound pod's GPUs; a pod is a group member only when that group's StatefulSet
        controls it (a pod labelled as a member must not cancel the group's reservation)."""
        members = {(group_key(g.namespace, g.service, g.replica), g.uid) for g in self.all_groups()}
        return [
            p.pod
            if p.pod.group is None or (p.pod.group, p.owner_uid) in members
            else replace(p.pod, group=None)
            for _, values in self.pods.items()
            for p in values
        ]

    def _controlled(self, key: Key, groups: Any) -> list[ObservedGroup]:
        service = self.service(key)
        uid = service["metadata"].get("uid") if service is not None else None
        return [g for g in groups if uid and g.owner_uid == uid]

    def all_groups(self) -> list[ObservedGroup]:
        """Replica groups controlled by a live InferenceService: labels and a placement annotation
        on a StatefulSet anyone may write, reserve nothing."""
        return [group for key, values in self.groups.items() for group in self._controlled(key, values)]

    def groups_of(self, key: Key) -> list[ObservedGroup]:
        return self._controlled(key, self.groups.get(key, []))

    def reservations(self, exclude: frozenset[str] = frozenset()) -> list[Reservation]:
        return [
            Reservation(group=k, nodes=g.nodes, gpus_per_pod=g.gpus_per_pod)
            for g in self.all_groups()
            if (k := group_key(g.namespace, g.service, g.replica)) not in exclude
        ]
