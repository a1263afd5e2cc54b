"""The declarative inventory of fake GPU nodes, and the Node objects built from it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_RESOURCE = "nvidia.com/gpu"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Taint(_Strict):
    key: str
    value: str
    effect: str


class Pool(_Strict):
    """The hardware of one kind of node."""

    product: str | None = None
    gpus: int = Field(default=0, ge=0)
    gpu_memory_mib: int | None = Field(default=None, alias="gpuMemoryMiB", ge=1)
    cpu: str
    memory: str
    pods: int = 110
    instance_type: str = Field(alias="instanceType")


class Inventory(_Strict):
    taint: Taint
    rack_label: str = Field(alias="rackLabel")
    pools: dict[str, Pool]
    zones: dict[str, dict[str, dict[str, int]]]
    """zone -> rack -> pool -> number of nodes"""

    @model_validator(mode="after")
    def _racks_name_known_pools(self) -> Inventory:
        for zone, racks in self.zones.items():
            for rack, pools in racks.items():
                unknown = sorted(set(pools) - set(self.pools))
                if unknown:
                    raise ValueError(
                        f"{zone}/{rack} names unknown pools {unknown}; known: {sorted(self.pools)}"
                    )
        return self


def default_inventory_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("gpu-inventory.yaml")))


def load_inventory(path: Path | None = None) -> Inventory:
    text = (path or default_inventory_path()).read_text()
    return Inventory.model_validate(yaml.safe_load(text))


def _zone_suffix(zone: str) -> str:
    return zone.rsplit("-", 1)[-1]


def build_node(name: str, pool: Pool, zone: str, rack: str, inventory: Inventory) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": pool.instance_type,
        ZONE_LABEL: zone,
        "topology.kubernetes.io/region": "local",
        inventory.rack_label: rack,
        "type": "kwok",
    }
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods)}
    taints: list[dict[str, str]] = []
    if pool.gpus:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": pool.product or "unknown",
            "nvidia.com/gpu.count": str(pool.gpus),
        }
        if pool.gpu_memory_mib is not None:
            labels["nvidia.com/gpu.memory"] = str(pool.gpu_memory_mib)
        capacity[GPU_RESOURCE] = str(pool.gpus)
        taints.append(inventory.taint.model_dump())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
        },
    }


def build_nodes(inventory: Inventory) -> list[dict[str, Any]]:
    """All nodes of the inventory, named <pool>-<zone suffix>-<index> with the index counted per zone."""
    nodes = []
    for zone, racks in inventory.zones.items():
        counters: dict[str, int] = {}
        for rack, pools in racks.items():
            for pool_name, count in pools.items():
                pool = inventory.pools[pool_name]
                for _ in range(count):
                    counters[pool_name] = counters.get(pool_name, 0) + 1
                    name = f"{pool_name}-{_zone_suffix(zone)}-{counters[pool_name]}"
                    nodes.append(build_node(name, pool, zone, rack, inventory))
    return nodes
