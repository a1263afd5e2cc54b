"""The real Karpenter (its KWOK cloud provider, sigs.k8s.io/karpenter/kwok) as the node autoscaler
for the placeholder pods: built by hack/build-karpenter.sh, pinned in hack/versions.env.

Karpenter provisions nodes for pending pods only (no ProvisioningRequests). Each of a scenario's
node groups is a NodePool of one 8x H100 instance type in one rack (template label
`inferfleet.io/rack`, the GPU product label and taint), its `limits` at `max_size` x 8 GPUs, its
`weight` in priority order (Karpenter's way to prefer a NodePool). Karpenter's KWOK provider
creates the Node objects itself; the local cluster's kwok controller runs them like any KWOK node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from bench.nodescale.scenarios import Scenario
from inferfleet.kube.apply import APPLY_PATCH
from inferfleet.localcluster.inventory import GPU_RESOURCE, Inventory
from inferfleet.localcluster.paths import cache_dir, pinned_versions
from inferfleet.localcluster.ports import free_ports
from inferfleet.localcluster.waiting import GiveUpError, wait_for

KARPENTER, NODECLASS_GROUP = "karpenter.sh", "karpenter.kwok.sh"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
INSTANCE_TYPE = "h100-8x"
CRDS = (
    "karpenter.sh_nodepools.yaml",
    "karpenter.sh_nodeclaims.yaml",
    "karpenter.sh_nodeoverlays.yaml",
    "karpenter.kwok.sh_kwoknodeclasses.yaml",
)


def karpenter_dir() -> Path:
    return cache_dir() / "bin" / f"karpenter-v{pinned_versions()['KARPENTER_VERSION']}"


def build_instance_types(inventory: Inventory, zone: str) -> list[dict[str, Any]]:
    """One instance type: the local inventory's H100 node, on demand in `zone`."""
    pool = inventory.pools["h100"]
    offering = {
        "Price": 98.32,
        "Available": True,
        "Requirements": [
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]},
        ],
    }
    resources = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods), GPU_RESOURCE: str(pool.gpus)}
    return [
        {
            "name": INSTANCE_TYPE,
            "offerings": [offering],
            "architecture": "amd64",
            "operatingSystems": ["linux"],
            "resources": resources,
        }
    ]


def build_node_pool(name: str, rack: str, max_size: int, weight: int, inventory: Inventory) -> dict[str, Any]:
    pool = inventory.pools["h100"]
    labels = {
        inventory.rack_label: rack,
        "nvidia.com/gpu.product": str(pool.product),
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": str(pool.gpus),
    }
    return {
        "apiVersion": f"{KARPENTER}/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "weight": weight,
            "limits": {GPU_RESOURCE: str(max_size * pool.gpus)},
            # cluster-autoscaler's 10 minutes: nothing is removed within an arm.
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeClassRef": {"group": NODECLASS_GROUP, "kind": "KWOKNodeClass", "name": "default"},
                    "requirements": [
                        {
                            "key": "node.kubernetes.io/instance-type",
                            "operator": "In",
                            "values": [INSTANCE_TYPE],
                        }
                    ],
                    "taints": [inventory.taint.model_dump()],
                    "expireAfter": "Never",
                },
            },
        },
    }


def node_pools(scenario: Scenario, arm: str, inventory: Inventory) -> list[dict[str, Any]]:
    """The scenario's node groups, the first with the highest weight (Karpenter's priority)."""
    count = len(scenario.node_groups)
    return [
        build_node_pool(scenario.node_group_name(arm, g.rack), g.rack, g.max_size, count - i, inventory)
        for i, g in enumerate(scenario.node_groups)
    ]


def install_karpenter_crds(api: client.ApiClient, crd_dir: Path, boot_s: float) -> None:
    """Karpenter's CRDs and the KWOKNodeClass whose nodes register `boot_s` after launch."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for file in CRDS:
        crd = yaml.safe_load((crd_dir / file).read_text())
        ext.patch_custom_resource_definition(
            crd["metadata"]["name"],
            crd,
            field_manager="inferfleet-bench",
            force=True,
            _content_type=APPLY_PATCH,
        )
        names.append(crd["metadata"]["name"])

    def established() -> bool:
        for name in names:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_for(established, timeout=60, what="Karpenter's CRDs established")
    custom = client.CustomObjectsApi(api)
    node_class = {
        "apiVersion": f"{NODECLASS_GROUP}/v1alpha1",
        "kind": "KWOKNodeClass",
        "metadata": {"name": "default"},
        "spec": {"nodeRegistrationDelay": f"{boot_s:g}s"},
    }
    custom.create_cluster_custom_object(NODECLASS_GROUP, "v1alpha1", "kwoknodeclasses", node_class)


@dataclass
class KarpenterProcess:
    kubeconfig: Path
    workdir: Path
    inventory: Inventory
    zone: str
    binary: Path = field(default_factory=lambda: karpenter_dir() / "karpenter-kwok")
    health_port: int = 0
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "karpenter.log"

    def start(self, timeout_seconds: float = 90) -> None:
        if not self.binary.is_file():
            raise RuntimeError(f"{self.binary} missing: run hack/build-karpenter.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        types = self.workdir / "instance-types.json"
        types.write_text(json.dumps(build_instance_types(self.inventory, self.zone), indent=2))
        metrics, self.health_port = free_ports(2)
        # Karpenter binds its metrics and health ports on every address (":port"): run only
        # inside the bench's private network namespace (cli.py enters it first).
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "SYSTEM_NAMESPACE": "kube-system",
            "DISABLE_LEADER_ELECTION": "true",
            "METRICS_PORT": str(metrics),
            "HEALTH_PROBE_PORT": str(self.health_port),
            "INSTANCE_TYPES_FILE_PATH": str(types),
            "LOG_LEVEL": "info",
        }
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [str(self.binary)], stdout=self._log, stderr=subprocess.STDOUT, env=os.environ | env
        )
        wait_for(self._healthy, timeout=timeout_seconds, what="Karpenter healthy")

    def _healthy(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise GiveUpError(f"Karpenter exited; log: {self.log_path}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()


@dataclass
class KarpenterNodes:
    """The nodes Karpenter launched for some NodePools: every NodeClaim seen, by node name."""

    api: client.ApiClient
    pools: list[str]
    seen: dict[str, str] = field(default_factory=dict)
    """NodeClaim name -> its node's name (the claim's own name until it has one)."""

    def added(self) -> tuple[str, ...]:
        custom = client.CustomObjectsApi(self.api)
        claims = custom.list_cluster_custom_object(
            KARPENTER, "v1", "nodeclaims", label_selector=f"{NODEPOOL_LABEL} in ({','.join(self.pools)})"
        )
        for claim in claims["items"]:
            name = claim["metadata"]["name"]
            node = (claim.get("status") or {}).get("nodeName")
            if node or name not in self.seen:
                self.seen[name] = node or name
        return tuple(self.seen.values())

    def delete_pools(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        for pool in self.pools:
            try:
                custom.delete_cluster_custom_object(KARPENTER, "v1", "nodepools", pool)
            except ApiException as e:
                if e.status != 404:
                    raise

        def gone() -> bool:
            return not custom.list_cluster_custom_object(
                KARPENTER, "v1", "nodeclaims", label_selector=f"{NODEPOOL_LABEL} in ({','.join(self.pools)})"
            )["items"]

        wait_for(gone, timeout=120, what="Karpenter's NodeClaims removed with their NodePools")
