"""The benchmark's cluster and workload: 8-GPU nodes of three products, 1-GPU InferenceServices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferfleet.api import API_VERSION, KIND
from inferfleet.localcluster.inventory import Inventory, Pool, build_node, load_inventory

RACK_NODES = 10
ZONES = ("zone-a", "zone-b", "zone-c")


@dataclass(frozen=True)
class Product:
    pool: str
    name: str
    memory_gib: int


PRODUCTS = (
    Product("h100", "NVIDIA-H100-80GB-HBM3", 80),
    Product("a100", "NVIDIA-A100-SXM4-40GB", 40),
    Product("l40s", "NVIDIA-L40S", 48),
)
GPUS_PER_NODE = 8


def _pool(product: Product) -> Pool:
    return Pool.model_validate({
        "product": product.name, "gpus": GPUS_PER_NODE, "gpuMemoryMiB": product.memory_gib * 1024,
        "cpu": "128", "memory": "1Ti", "instanceType": f"gpu-{product.pool}-8x",
    })  # fmt: skip


def build_fleet_nodes(count: int, inventory: Inventory | None = None) -> list[dict[str, Any]]:
    """`count` 8-GPU nodes cycling through the products, in racks of 10 spread over three zones."""
    inventory = inventory or load_inventory()  # for its taint and rack label
    pools = [_pool(p) for p in PRODUCTS]
    nodes = []
    for i in range(count):
        rack = i // RACK_NODES
        zone = ZONES[rack % len(ZONES)]
        product = PRODUCTS[i % len(PRODUCTS)]
        name = f"{product.pool}-{i:04d}"
        nodes.append(build_node(name, pools[i % len(PRODUCTS)], zone, f"rack-{rack:02d}", inventory))
    return nodes


def gpus_by_product(node_count: int) -> dict[str, int]:
    counts = {p.name: 0 for p in PRODUCTS}
    for i in range(node_count):
        counts[PRODUCTS[i % len(PRODUCTS)].name] += GPUS_PER_NODE
    return counts


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    product: str
    autoscaled: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def plan_services(start: int, count: int, namespaces: int) -> list[ServiceRef]:
    """Services start..start+count-1: products round-robin, every other one autoscaled."""
    return [
        ServiceRef(
            namespace=f"bench-reconcile-{i % namespaces}",
            name=f"llama-{i:04d}",
            product=PRODUCTS[i % len(PRODUCTS)].name,
            autoscaled=i % 2 == 0,
        )
        for i in range(start, start + count)
    ]


def check_capacity(services: list[ServiceRef], node_count: int) -> None:
    free = gpus_by_product(node_count)
    for ref in services:
        free[ref.product] -= 1
    short = {product: -n for product, n in free.items() if n < 0}
    if short:
        raise SystemExit(f"not enough GPUs for the services; short by product: {short}")


def service_manifest(ref: ServiceRef) -> dict[str, Any]:
    """examples/llama-3.1-8b-vllm.yaml (1 GPU per replica) on the service's product, no Secret."""
    memory = next(p.memory_gib for p in PRODUCTS if p.name == ref.product)
    spec: dict[str, Any] = {
        "model": {
            "name": "llama-3.1-8b-instruct",
            "source": "hf://meta-llama/Llama-3.1-8B-Instruct",
            "parametersBillions": 8.03,
            "dtype": "bfloat16",
            "architecture": {
                "numLayers": 32,
                "hiddenSize": 4096,
                "numAttentionHeads": 32,
                "numKeyValueHeads": 8,
            },
            "maxModelLen": 8192,
        },
        "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "maxConcurrentRequests": 64},
        "accelerator": {"product": ref.product, "memoryGiB": memory, "gpusPerNode": GPUS_PER_NODE},
        "replicas": 1,
    }
    if ref.autoscaled:
        spec["scaling"] = {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 4}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": ref.name, "namespace": ref.namespace},
        "spec": spec,
    }
