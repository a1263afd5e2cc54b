"""The cluster's GPU products as the planners see them, summarized from Node objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api import SchedulingSpec, Toleration
from inferfleet.planning.conditions import find_true_condition
from inferfleet.planning.names import GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class GpuNode:
    name: str
    product: str
    gpus: int
    gpu_memory_gib: float | None
    labels: Mapping[str, str]
    ready: bool = True
    cordoned: bool = False
    taints: tuple[Taint, ...] = ()
    """NoSchedule and NoExecute taints besides the GPU resource's own (engine pods tolerate that)."""

    @property
    def schedulable(self) -> bool:
        """Ready, not cordoned, and no taint keeps pods without extra tolerations off."""
        return self.accepts(None)

    def accepts(self, scheduling: SchedulingSpec | None) -> bool:
        """Whether engine pods with this scheduling spec (None: no extra tolerations, no node
        selector) may be placed here now.

        A new node carries node.kubernetes.io/not-ready until the node lifecycle controller sees it
        Ready; placing a group there before would leave its members Unschedulable."""
        tolerations = scheduling.tolerations if scheduling else []
        selector = scheduling.node_selector if scheduling else {}
        return (
            self.ready
            and not self.cordoned
            and all(any(tolerates(t, taint) for t in tolerations) for taint in self.taints)
            and all(self.labels.get(k) == v for k, v in selector.items())
        )


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """core/v1 Toleration.ToleratesTaint."""
    if toleration.effect is not None and toleration.effect != taint.effect:
        return False
    if toleration.key is not None and toleration.key != taint.key:
        return False
    return toleration.operator == "Exists" or (toleration.value or "") == taint.value


@dataclass(frozen=True)
class ProductCapacity:
    product: str
    gpu_memory_gib: float | None
    """Smallest GPU memory reported by the product's nodes (None when no node reports it)."""
    gpus_per_node: int
    """Most GPUs one schedulable node of the product offers."""
    nodes: int


def _gpu_count(node: Mapping[str, Any], resource_name: str) -> int:
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    try:
        return int(str(allocatable.get(resource_name, "0")))
    except ValueError:
        return 0


def _blocking_taints(node: Mapping[str, Any], resource_name: str) -> tuple[Taint, ...]:
    """Taints that keep pods off the node, except the GPU resource's own (engine pods tolerate it)."""
    return tuple(
        Taint(key=str(t.get("key") or ""), value=str(t.get("value") or ""), effect=str(t.get("effect")))
        for t in (node.get("spec") or {}).get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != resource_name
    )


def build_gpu_node(node: Mapping[str, Any], resource_name: str = "nvidia.com/gpu") -> GpuNode | None:
    """The GPU view of a Node object, or None for nodes without GPUs of `resource_name`."""
    gpus = _gpu_count(node, resource_name)
    if gpus <= 0:
        return None
    meta = node.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    memory_mib = labels.get(GPU_MEMORY_LABEL)
    ready = find_true_condition((node.get("status") or {}).get("conditions"), "Ready") is not None
    return GpuNode(
        name=str(meta.get("name", "")),
        product=labels.get(GPU_PRODUCT_LABEL, "unknown"),
        gpus=gpus,
        gpu_memory_gib=int(memory_mib) / MIB_PER_GIB if memory_mib and memory_mib.isdigit() else None,
        labels=labels,
        ready=ready,
        cordoned=bool((node.get("spec") or {}).get("unschedulable", False)),
        taints=_blocking_taints(node, resource_name),
    )


def summarize_products(
    nodes: Iterable[GpuNode], scheduling: SchedulingSpec | None = None
) -> dict[str, ProductCapacity]:
    """GPU products of the nodes that pods with `scheduling` may use (None: no extra tolerations)."""
    by_product: dict[str, list[GpuNode]] = {}
    for node in nodes:
        if node.accepts(scheduling):
            by_product.setdefault(node.product, []).append(node)
    summary = {}
    for product, group in by_product.items():
        memories = [n.gpu_memory_gib for n in group if n.gpu_memory_gib is not None]
        summary[product] = ProductCapacity(
            product=product,
            gpu_memory_gib=min(memories) if memories else None,
            gpus_per_node=max(n.gpus for n in group),
            nodes=len(group),
        )
    return summary
