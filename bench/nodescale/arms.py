"""The two arms on the local cluster (IO): the same node autoscaler, two ways of asking it.

* atomic: the operator runs; the 405B service's groups do not fit, so it makes one
  best-effort-atomic ProvisioningRequest per group, which the stand-in answers with all of a
  group's nodes in one rack or none;
* placeholder: no operator; one pending pod per rank of every group (what LeaderWorkerSet creates:
  each an ordinary pod with the group's resources, GPU product, tolerations, pod affinity to its
  group's rack and anti-affinity to its own host), for which the stand-in adds nodes as
  cluster-autoscaler does for pending pods.

Both arms time each group from creation ("does not fit") to all its pods Ready, and stop when
every group is Ready, when nothing changed for `settle_s`, or at `timeout_s`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from bench.nodescale.karpenter import KarpenterNodes, node_pools
from bench.nodescale.report import ATOMIC, KARPENTER, PLACEHOLDER, Observation
from bench.nodescale.scenarios import POD_PER_GROUP, Scenario
from inferfleet.api import InferenceServiceSpec, ShardPlan
from inferfleet.localcluster.inventory import Inventory
from inferfleet.localcluster.node_autoscaler_standin import NodeAutoscalerStandIn, NodeGroup
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.children import Owner
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL
from inferfleet.planning.provisioning import build_pod_template

EXAMPLE = Path(__file__).parents[2] / "examples" / "llama-3.1-405b-vllm.yaml"
IS = ("inferfleet.io", "v1alpha1", "inferenceservices")
SERVICE = "llama405b"
ZONE = "zone-x"


def service_manifest(replicas: int) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": SERVICE}
    body["spec"]["replicas"] = replicas
    return body


def build_rank_pods(
    template: dict[str, Any], namespace: str, replica: int, ranks: int
) -> list[dict[str, Any]]:
    """LWS-style: one ordinary pod per rank, from the group's pod (the operator's PodTemplate)."""
    pods = []
    for rank in range(ranks):
        meta = template["template"]["metadata"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{SERVICE}-g{replica}-{rank}",
                    "namespace": namespace,
                    "labels": dict(meta.get("labels") or {}),
                    "annotations": dict(meta.get("annotations") or {}),
                },
                "spec": copy.deepcopy(template["template"]["spec"]),
            }
        )
    return pods


@dataclass
class Bench:
    api: client.ApiClient
    inventory: Inventory
    settle_s: float = 20.0
    timeout_s: float = 150.0
    autoscaler_interval_s: float = 0.5
    boot_s: float = 0.0
    """How long a new node takes to become schedulable (a cloud instance booting), in every arm."""
    shards: ShardPlan | None = None
    """The operator's shard plan for the 405B replica, read from the atomic arm's status."""
    core: client.CoreV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)

    def autoscaler(self, scenario: Scenario, arm: str) -> NodeAutoscalerStandIn:
        """The same autoscaler in both arms: atomic requests and pending pods, priority order."""
        groups = [
            NodeGroup(
                scenario.node_group_name(arm, g.rack),
                pool="h100",
                zone=ZONE,
                rack=g.rack,
                max_size=g.max_size,
            )
            for g in scenario.node_groups
        ]
        # cluster-autoscaler removes a node after 10 minutes unneeded: never within an arm.
        return NodeAutoscalerStandIn(
            self.api,
            groups,
            self.inventory,
            interval=self.autoscaler_interval_s,
            unneeded_seconds=600,
            boot_seconds=self.boot_s,
            serve_requests=True,
            pending_pods=True,
        )

    def namespace(self, scenario: Scenario, arm: str) -> str:
        name = f"ns-{scenario.name}-{arm}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def run_atomic(self, scenario: Scenario) -> tuple[Observation, dict[str, Any]]:
        namespace = self.namespace(scenario, ATOMIC)
        autoscaler = self.autoscaler(scenario, ATOMIC)
        custom = client.CustomObjectsApi(self.api)
        autoscaler.start()
        try:
            t0 = time.monotonic()
            custom.create_namespaced_custom_object(
                *IS[:2], namespace, IS[2], service_manifest(scenario.groups)
            )
            obs = self.observe(namespace, scenario.groups, t0, lambda: autoscaler.added, autoscaler.removed)
            body = custom.get_namespaced_custom_object(*IS[:2], namespace, IS[2], SERVICE)
        finally:
            autoscaler.stop()
        status = body.get("status") or {}
        if self.shards is None and status.get("shardPlan"):
            self.shards = ShardPlan.model_validate(status["shardPlan"])
        placed: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c["type"] == "Placed"), {}
        )
        self.clean(namespace, autoscaler)
        return obs, {"placed": {k: placed.get(k) for k in ("status", "reason", "message")}}

    def run_placeholder(self, scenario: Scenario) -> tuple[Observation, dict[str, Any]]:
        namespace = self.namespace(scenario, PLACEHOLDER)
        pods = self.placeholder_pods(scenario, namespace)
        autoscaler = self.autoscaler(scenario, PLACEHOLDER)
        autoscaler.start()
        try:
            t0 = time.monotonic()
            for pod in pods:
                self.core.create_namespaced_pod(namespace, pod)
            obs = self.observe(namespace, scenario.groups, t0, lambda: autoscaler.added, autoscaler.removed)
        finally:
            autoscaler.stop()
        self.clean(namespace, autoscaler)
        return obs, {"pods": [p["metadata"]["name"] for p in pods]}

    def placeholder_pods(self, scenario: Scenario, namespace: str) -> list[dict[str, Any]]:
        """One pod per rank of every group, from the operator's own PodTemplate builder."""
        if self.shards is None:
            raise RuntimeError("the placeholder arms build their pods from the atomic arm's shard plan")
        spec = InferenceServiceSpec.model_validate(service_manifest(scenario.groups)["spec"])
        owner = Owner(name=SERVICE, namespace=namespace, uid="")
        ranks = self.shards.pods_per_replica
        return [
            pod
            for replica in range(scenario.groups)
            for pod in build_rank_pods(
                build_pod_template(owner, spec, self.shards, replica), namespace, replica, ranks
            )
        ]

    def run_karpenter(self, scenario: Scenario) -> tuple[Observation, dict[str, Any]]:
        """The placeholder pods with the real Karpenter (running) as the node autoscaler."""
        namespace = self.namespace(scenario, KARPENTER)
        pods = self.placeholder_pods(scenario, namespace)
        custom = client.CustomObjectsApi(self.api)
        pools = node_pools(scenario, KARPENTER, self.inventory)
        for pool in pools:
            custom.create_cluster_custom_object("karpenter.sh", "v1", "nodepools", pool)
        nodes = KarpenterNodes(self.api, [p["metadata"]["name"] for p in pools])
        t0 = time.monotonic()
        for pod in pods:
            self.core.create_namespaced_pod(namespace, pod)
        obs = self.observe(namespace, scenario.groups, t0, nodes.added, ())
        self.core.delete_namespace(namespace)
        wait_for(
            lambda: not _exists(lambda: self.core.read_namespace(namespace)),
            timeout=180,
            what=f"namespace {namespace} deleted",
        )
        nodes.delete_pools()
        return obs, {"pods": [p["metadata"]["name"] for p in pods]}

    def observe(
        self,
        namespace: str,
        groups: int,
        t0: float,
        added: Callable[[], Sequence[str]],
        removed: Sequence[str],
    ) -> Observation:
        """Poll until every group is Ready, nothing changed for settle_s, or timeout_s."""
        ready_after: dict[int, float] = {}
        last: dict[str, Any] = {"sig": None, "at": t0}
        bound: dict[int, list[str]] = {}

        def done() -> bool:
            now = time.monotonic()
            by_replica = self._group_pods(namespace)
            for replica, pods in by_replica.items():
                if replica not in ready_after and len(pods) == POD_PER_GROUP and all(map(_ready, pods)):
                    ready_after[replica] = now - t0
            bound.clear()
            bound.update(
                {r: [p.spec.node_name for p in ps if p.spec.node_name] for r, ps in by_replica.items()}
            )
            sig = (tuple(added()), tuple(sorted((r, tuple(sorted(n))) for r, n in bound.items())))
            if sig != last["sig"]:
                last.update(sig=sig, at=now)
            # A node still booting changes nothing visible: wait out its boot before calling it settled.
            quiet = now - last["at"] >= self.settle_s + self.boot_s
            return len(ready_after) == groups or quiet or now - t0 >= self.timeout_s

        wait_for(done, timeout=self.timeout_s + 60, what=f"the arm in {namespace} to finish or settle")
        return Observation(
            groups=groups,
            pods_per_group=POD_PER_GROUP,
            ready_after=dict(ready_after),
            bound={r: tuple(n) for r, n in bound.items()},
            added=tuple(added()),
            removed=tuple(removed),
            seconds=time.monotonic() - t0,
        )

    def _group_pods(self, namespace: str) -> dict[int, list[client.V1Pod]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"{SERVICE_LABEL}={SERVICE}").items
        by_replica: dict[int, list[client.V1Pod]] = {}
        for pod in pods:
            if pod.metadata.deletion_timestamp is None and REPLICA_LABEL in (pod.metadata.labels or {}):
                by_replica.setdefault(int(pod.metadata.labels[REPLICA_LABEL]), []).append(pod)
        return by_replica

    def clean(self, namespace: str, autoscaler: NodeAutoscalerStandIn) -> None:
        """Delete the arm's namespace, then (its pods gone) every node its autoscaler added."""
        self.core.delete_namespace(namespace)
        wait_for(
            lambda: not _exists(lambda: self.core.read_namespace(namespace)),
            timeout=180,
            what=f"namespace {namespace} deleted",
        )
        for name in set(autoscaler.added) - set(autoscaler.removed):
            _ignore_404(partial(self.core.delete_node, name))


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _ignore_404(call: Callable[[], Any]) -> None:
    try:
        call()
    except ApiException as e:
        if e.status != 404:
            raise


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True
