"""Plan one InferenceService: which GPUs, how sharded, and the child objects to apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inferfleet.api import InferenceServiceSpec, ShardingMode
from inferfleet.planning import sizing
from inferfleet.planning.children import Owner, build_deployment, build_pdb, build_service
from inferfleet.planning.engines import Parallelism
from inferfleet.planning.inventory import ProductCapacity

# Sizing needs a context length; an unset maxModelLen is budgeted as this many tokens.
DEFAULT_SIZING_CONTEXT = 8192


@dataclass(frozen=True)
class Blocked:
    """Why nothing can be deployed now; becomes Ready=False with this reason and an Event."""

    reason: str
    message: str


@dataclass(frozen=True)
class ServicePlan:
    shard_plan: sizing.ShardPlan | None = None
    children: list[dict[str, Any]] = field(default_factory=list)
    blocked: Blocked | None = None


@dataclass(frozen=True)
class GpuShape:
    memory_gib: float
    gpus_per_node: int


def resolve_gpu(spec: InferenceServiceSpec, products: Mapping[str, ProductCapacity]) -> GpuShape | Blocked:
    """The GPU the model is sized for: the spec's numbers, else what the product's nodes report."""
    acc = spec.accelerator
    if acc.product:
        if acc.product not in products:
            available = ", ".join(sorted(products)) or "none"
            return Blocked(
                "NoMatchingNodes",
                f"no schedulable node offers {acc.resource_name} of product {acc.product} "
                f"(node label nvidia.com/gpu.product); products in the cluster: {available}",
            )
        candidates = [products[acc.product]]
    else:
        candidates = list(products.values())
        if not candidates:
            return Blocked("NoMatchingNodes", f"no schedulable node offers {acc.resource_name}")
    # What the nodes report is the truth; the spec's numbers are for planning without a cluster.
    reported = [c.gpu_memory_gib for c in candidates if c.gpu_memory_gib is not None]
    memory = min(reported) if reported else acc.memory_gib
    if memory is None:
        return Blocked(
            "UnknownGpuMemory",
            "GPU memory is unknown: set spec.accelerator.memoryGiB or label the nodes nvidia.com/gpu.memory",
        )
    # Without a product any node may be chosen, so plan for the smallest one.
    return GpuShape(memory_gib=memory, gpus_per_node=min(c.gpus_per_node for c in candidates))


def build_sizing_input(spec: InferenceServiceSpec, gpu: GpuShape) -> sizing.SizingInput:
    arch = spec.model.architecture
    manual = spec.sharding.mode == ShardingMode.MANUAL
    return sizing.SizingInput(
        parameters_billions=spec.model.parameters_billions,
        dtype=sizing.Dtype(spec.model.dtype.value),
        max_model_len=spec.model.max_model_len or DEFAULT_SIZING_CONTEXT,
        gpu_memory_gib=gpu.memory_gib,
        gpus_per_node=gpu.gpus_per_node,
        architecture=sizing.Architecture(
            num_layers=arch.num_layers,
            hidden_size=arch.hidden_size,
            num_attention_heads=arch.num_attention_heads,
            num_key_value_heads=arch.num_key_value_heads,
            head_dim=arch.head_dim,
        )
        if arch
        else None,
        tensor_parallel=spec.sharding.tensor_parallel if manual else None,
        pipeline_parallel=spec.sharding.pipeline_parallel if manual else None,
    )


def plan_service(
    owner: Owner, spec: InferenceServiceSpec, products: Mapping[str, ProductCapacity]
) -> ServicePlan:
    gpu = resolve_gpu(spec, products)
    if isinstance(gpu, Blocked):
        return ServicePlan(blocked=gpu)
    try:
        shards = sizing.plan_shards(build_sizing_input(spec, gpu))
    except sizing.SizingError as e:
        return ServicePlan(blocked=Blocked("ModelDoesNotFit", str(e)))
    if shards.pods_per_replica > 1:
        return ServicePlan(
            shard_plan=shards,
            blocked=Blocked(
                "MultiNodeNotSupported",
                f"one replica needs {shards.pods_per_replica} nodes ({shards.layout} TPxPP); "
                "multi-node replica groups are not implemented yet",
            ),
        )
    par = Parallelism(tensor=shards.tensor_parallel, pipeline=shards.pipeline_parallel)
    children = [
        build_deployment(owner, spec, par, shards.gpus_per_pod),
        build_service(owner, spec),
        build_pdb(owner, spec),
    ]
    return ServicePlan(shard_plan=shards, children=children)
