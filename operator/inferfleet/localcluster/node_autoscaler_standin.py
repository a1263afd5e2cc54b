"""A stand-in for cluster-autoscaler's ProvisioningRequest support, for the local cluster's tests.

It stands in for cluster-autoscaler because this project cannot build it: the Go module proxy
refuses `k8s.io/autoscaler/cluster-autoscaler` (403 "This module version is not available"), and
the machines that run the tests reach no other source. What it does, as cluster-autoscaler does
with `--enable-provisioning-requests` and a cloud provider of node groups:

- watches ProvisioningRequests (by polling, every `interval` seconds) of the
  `best-effort-atomic-scale-up.autoscaling.x-k8s.io` class, reads the PodTemplate each references;
- adds ALL the nodes a request needs (one per pod: the pods ask for whole GPU nodes, one per
  node) at once from ONE node group (a node-group template: a pool of the local inventory in one
  zone and rack, built by the inventory's own node builder, so KWOK runs them), or none when that
  would exceed the group's maximum size; then sets `Accepted` and `Provisioned=True`
  (`CapacityIsProvisioned`), or `Failed=True` with its reason and message;
- removes a node it added once no pod is bound to it for `unneeded_seconds` and no request that
  booked it remains (scale-down of empty nodes).

With `pending_pods=True` it also scales up for plain pending pods, as cluster-autoscaler's
classic scale-up loop does (what `bench/nodescale` compares ProvisioningRequests against; see
`_scale_up_for_pending_pods`). With `serve_requests=False` it ignores ProvisioningRequests (a
cluster without the API).

What it does not model: the scheduler simulation of atomic requests (it matches the template's
GPU product and count, not affinities, taints or other resources), packing several pods on one
node, retries with backoff before `Failed` (cluster-autoscaler keeps
`Provisioned=False` with `CapacityIsNotFound` and retries until the request expires; this answers
`Failed` at once), booking expiry (`BookingExpired` after 10 minutes), scale-down of nodes that
hold pods, and cloud provisioning as it is (`boot_seconds` only holds new nodes unschedulable
for a fixed time: no variance, no failed launches).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.crds import install_crd_files
from inferfleet.localcluster.inventory import GPU_RESOURCE, Inventory, build_node, load_inventory

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "autoscaling.x-k8s.io", "v1", "provisioningrequests"
ATOMIC_CLASS = "best-effort-atomic-scale-up.autoscaling.x-k8s.io"
NODE_GROUP_LABEL = "standin.inferfleet.io/node-group"
BOOKED_ANNOTATION = "standin.inferfleet.io/booked-by"
BOOTING_TAINT = "standin.inferfleet.io/booting"
PRODUCT_LABEL = "nvidia.com/gpu.product"
CRD_PATH = Path(__file__).with_name("provisioningrequest-crd.yaml")


@dataclass(frozen=True)
class NodeGroup:
    """A node-group template: `pool` nodes in one `zone` and `rack`, at most `max_size` of them."""

    name: str
    pool: str
    zone: str
    rack: str
    max_size: int


@dataclass
class NodeAutoscalerStandIn:
    api: client.ApiClient
    groups: list[NodeGroup]
    inventory: Inventory = field(default_factory=load_inventory)
    interval: float = 0.3
    unneeded_seconds: float = 2.0
    added: list[str] = field(default_factory=list)
    """Every node it added, in order (removed ones too): what a test counts."""
    removed: list[str] = field(default_factory=list)
    serve_requests: bool = True
    """Answer best-effort-atomic ProvisioningRequests (the CRD must be installed)."""
    pending_pods: bool = False
    """Add nodes for unschedulable pending pods, one node group per loop, as cluster-autoscaler."""
    boot_seconds: float = 0.0
    """Nodes it adds carry a NoSchedule `standin.inferfleet.io/booting` taint this long: a cloud
    instance starting. They count as capacity on the way (cluster-autoscaler's upcoming nodes)."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-autoscaler-standin", daemon=True)
        self._empty_since: dict[str, float] = {}
        self._booted_at: dict[str, float] = {}
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except ApiException as e:  # the next tick tries again, as a controller would
                log.warning(f"node autoscaler stand-in: {e.status} {e.reason}")
            self._stop.wait(self.interval)

    def tick(self) -> None:
        requests = (
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
            if self.serve_requests
            else []
        )
        for request in requests:
            if request["spec"].get("provisioningClassName") == ATOMIC_CLASS and not _answered(request):
                self._answer(request)
        if self.pending_pods:
            self._scale_up_for_pending_pods()
        self._finish_boots()
        self._scale_down({_key(r) for r in requests})

    def _scale_up_for_pending_pods(self) -> None:
        """One scale-up of cluster-autoscaler's loop for pods the scheduler marked Unschedulable.

        As cluster-autoscaler does with the `priority` expander (node groups in `groups` order,
        first = highest priority) and its binpacking estimator: pending pods are first assumed to
        land on nodes that still have room (such as nodes it added that the scheduler has not
        used yet); for the rest, each node group in turn simulates new nodes of its template for
        them, in creation order, honouring the GPU product and count, one pod per node, and
        required pod affinity and anti-affinity against bound pods and pods placed earlier in
        the simulation; the first node group that helps at least one pod gets that many nodes,
        capped by its maximum. Nothing gangs the pods:
        part of a group can get nodes while the rest cannot.
        """
        pods = [
            p for p in self.core.list_pod_for_all_namespaces().items if p.metadata.deletion_timestamp is None
        ]
        pending = sorted(
            (p for p in pods if not p.spec.node_name and _unschedulable(p)),
            key=lambda p: (p.metadata.creation_timestamp, p.metadata.name),
        )
        if not pending:
            return
        nodes = {n.metadata.name: n for n in self.core.list_node().items}
        sim = ScaleUpSimulation.of(pods, nodes)
        rest = [p for p in pending if not sim.place_on_any(p, list(nodes.values()))]
        for group in self.groups:
            room = group.max_size - len(self._nodes_of(group))
            template = build_node(
                "template", self.inventory.pools[group.pool], group.zone, group.rack, self.inventory
            )
            trial, helped = sim.copy(), 0
            for pod in rest:
                if helped < room and trial.place_on_new(pod, template):
                    helped += 1
            if helped:
                self._add_nodes(group, helped, booked_by="")
                return

    def _answer(self, request: dict[str, Any]) -> None:
        meta = request["metadata"]
        [pod_set] = request["spec"]["podSets"]
        template = self.core.read_namespaced_pod_template(
            pod_set["podTemplateRef"]["name"], meta["namespace"]
        )
        pod = template.template.spec
        product = (pod.node_selector or {}).get(PRODUCT_LABEL)
        gpus = int((pod.containers[0].resources.limits or {}).get(GPU_RESOURCE, 0))
        count = int(pod_set["count"])
        fitting = [
            g
            for g in self.groups
            if self.inventory.pools[g.pool].product == product and self.inventory.pools[g.pool].gpus >= gpus
        ]
        for group in fitting:
            size = len(self._nodes_of(group))
            if size + count <= group.max_size:
                # Provisioned first, then the nodes, as cluster-autoscaler marks a request once its
                # scale-up is under way and the nodes register later. The other order let the
                # operator see free nodes before the answer and place the group without consuming it.
                self._set_conditions(request, provisioned=True, reason="CapacityIsProvisioned",
                                     message=f"{count} nodes coming in group {group.name}")  # fmt: skip
                self._add_nodes(group, count, _key(request))
                return
        why = (
            f"no node group offers {product} nodes with {gpus} GPUs"
            if not fitting
            else "; ".join(
                f"node group {g.name} has {len(self._nodes_of(g))} of at most {g.max_size} nodes, "
                f"{count} more would exceed it"
                for g in fitting
            )
        )
        self._set_conditions(request, provisioned=False, reason="CapacityIsNotFound", message=why)

    def _nodes_of(self, group: NodeGroup) -> list[Any]:
        return list(self.core.list_node(label_selector=f"{NODE_GROUP_LABEL}={group.name}").items)

    def _add_nodes(self, group: NodeGroup, count: int, booked_by: str) -> None:
        existing = {n.metadata.name for n in self._nodes_of(group)}
        names = [n for n in (f"{group.name}-{i}" for i in range(1, group.max_size + 1)) if n not in existing]
        for name in names[:count]:
            node = build_node(name, self.inventory.pools[group.pool], group.zone, group.rack, self.inventory)
            node["metadata"]["labels"][NODE_GROUP_LABEL] = group.name
            node["metadata"]["annotations"][BOOKED_ANNOTATION] = booked_by
            if self.boot_seconds > 0:
                node["spec"].setdefault("taints", []).append({"key": BOOTING_TAINT, "effect": "NoSchedule"})
                self._booted_at[name] = time.monotonic() + self.boot_seconds
            self.core.create_node(node)
            self.added.append(name)

    def _finish_boots(self) -> None:
        now = time.monotonic()
        for name, at in list(self._booted_at.items()):
            if now < at:
                continue
            taints = self.core.read_node(name).spec.taints or []
            kept = [self.api.sanitize_for_serialization(t) for t in taints if t.key != BOOTING_TAINT]
            self.core.patch_node(name, {"spec": {"taints": kept}})
            del self._booted_at[name]

    def _set_conditions(
        self, request: dict[str, Any], *, provisioned: bool, reason: str, message: str
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        generation = request["metadata"].get("generation", 1)

        def condition(type_: str, status: bool, reason_: str, message_: str) -> dict[str, Any]:
            return {"type": type_, "status": str(status), "reason": reason_, "message": message_,
                    "lastTransitionTime": now, "observedGeneration": generation}  # fmt: skip

        conditions = [
            condition("Accepted", True, "Accepted", "ProvisioningRequest is accepted by the stand-in"),
            condition("Provisioned", provisioned, reason, message),
        ]
        if not provisioned:
            conditions.append(condition("Failed", True, reason, message))
        meta = request["metadata"]
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": {"conditions": conditions}}
        )

    def _scale_down(self, requests: set[str]) -> None:
        """Remove added nodes that hold no pod and that no remaining request booked."""
        now = time.monotonic()
        bound = {p.spec.node_name for p in self.core.list_pod_for_all_namespaces().items if p.spec.node_name}
        for node in self.core.list_node(label_selector=NODE_GROUP_LABEL).items:
            name = node.metadata.name
            booked = (node.metadata.annotations or {}).get(BOOKED_ANNOTATION) in requests
            if name in bound or booked:
                self._empty_since.pop(name, None)
                continue
            since = self._empty_since.setdefault(name, now)
            if now - since >= self.unneeded_seconds:
                self.core.delete_node(name)
                self.removed.append(name)
                self._empty_since.pop(name)


def _unschedulable(pod: Any) -> bool:
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in pod.status.conditions or []
    )


def _pod_gpus(pod: Any) -> int:
    return sum(int((c.resources.limits or {}).get(GPU_RESOURCE, 0)) for c in pod.spec.containers)


@dataclass
class _Placed:
    namespace: str
    labels: dict[str, str]
    node_labels: dict[str, str]


@dataclass
class ScaleUpSimulation:
    """Bound pods and free GPUs per node, plus the pods a scale-up simulation has placed."""

    placed: list[_Placed]
    free: dict[str, int]
    node_labels: dict[str, dict[str, str]]

    @classmethod
    def of(cls, pods: list[Any], nodes: dict[str, Any]) -> ScaleUpSimulation:
        labels = {name: dict(n.metadata.labels or {}) for name, n in nodes.items()}
        free = {name: int((n.status.allocatable or {}).get(GPU_RESOURCE, 0)) for name, n in nodes.items()}
        placed = []
        for pod in pods:
            if pod.spec.node_name in labels:
                free[pod.spec.node_name] = free.get(pod.spec.node_name, 0) - _pod_gpus(pod)
                placed.append(
                    _Placed(
                        pod.metadata.namespace, dict(pod.metadata.labels or {}), labels[pod.spec.node_name]
                    )
                )
        return cls(placed, free, labels)

    def copy(self) -> ScaleUpSimulation:
        return ScaleUpSimulation(list(self.placed), dict(self.free), dict(self.node_labels))

    def fits(self, pod: Any, node_labels: dict[str, str], free_gpus: int) -> bool:
        product = (pod.spec.node_selector or {}).get(PRODUCT_LABEL)
        if free_gpus < _pod_gpus(pod) or (product and node_labels.get(PRODUCT_LABEL) != product):
            return False
        affinity, anti = _required_terms(pod)
        for term in affinity:
            matching = self._matching(pod, term)
            own = _selects(term, pod.metadata.labels or {})
            if matching and not any(
                m.node_labels.get(term.topology_key) == node_labels.get(term.topology_key) for m in matching
            ):
                return False
            if not matching and not own:
                return False
        for term in anti:
            if any(
                m.node_labels.get(term.topology_key) == node_labels.get(term.topology_key)
                for m in self._matching(pod, term)
            ):
                return False
        return True

    def _matching(self, pod: Any, term: Any) -> list[_Placed]:
        return [m for m in self.placed if m.namespace == pod.metadata.namespace and _selects(term, m.labels)]

    def _place(self, pod: Any, node_labels: dict[str, str]) -> None:
        self.placed.append(_Placed(pod.metadata.namespace, dict(pod.metadata.labels or {}), node_labels))

    def place_on_any(self, pod: Any, nodes: list[Any]) -> bool:
        for node in nodes:
            name = node.metadata.name
            if self.fits(pod, self.node_labels[name], self.free.get(name, 0)):
                self.free[name] -= _pod_gpus(pod)
                self._place(pod, self.node_labels[name])
                return True
        return False

    def place_on_new(self, pod: Any, template: dict[str, Any]) -> bool:
        """Place `pod` on a new node of `template`, if it fits there (one pod per new node)."""
        labels = dict(template["metadata"]["labels"])
        if not self.fits(pod, labels, int(template["status"]["allocatable"].get(GPU_RESOURCE, 0))):
            return False
        self._place(pod, labels | {"kubernetes.io/hostname": f"new-{len(self.placed)}"})
        return True


def _required_terms(pod: Any) -> tuple[list[Any], list[Any]]:
    """A pod's required pod affinity and anti-affinity terms."""
    affinity = pod.spec.affinity
    if affinity is None:
        return [], []
    with_ = (
        affinity.pod_affinity.required_during_scheduling_ignored_during_execution
        if affinity.pod_affinity
        else None
    )
    against = (
        affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution
        if affinity.pod_anti_affinity
        else None
    )
    return list(with_ or []), list(against or [])


def _selects(term: Any, labels: dict[str, str]) -> bool:
    """matchLabels only: what the pods this stand-in sees use."""
    selector = term.label_selector
    wanted = (selector.match_labels or {}) if selector else {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _key(request: dict[str, Any]) -> str:
    return f"{request['metadata']['namespace']}/{request['metadata']['name']}"


def _answered(request: dict[str, Any]) -> bool:
    conditions = (request.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Provisioned", "Failed") for c in conditions)


def install_provisioning_crd(api: client.ApiClient, timeout_seconds: float = 60) -> str:
    """The ProvisioningRequest CRD (cluster-autoscaler installs it on a real cluster), established."""
    [name] = install_crd_files(api, [CRD_PATH], timeout_seconds)
    return name
