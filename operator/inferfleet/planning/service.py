"""Plan one InferenceService: which GPUs, how sharded, and the child objects to apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from inferfleet.api import (
    ArchitectureSpec,
    InferenceServiceSpec,
    ModelArchitecture,
    ModelFactsSource,
    ModelStatus,
    PlacedReason,
    ReadyReason,
    ShardingMode,
    ShardPlan,
)
from inferfleet.planning import sizing
from inferfleet.planning.children import Owner, build_deployment, build_pdb, build_service
from inferfleet.planning.groups import (
    MULTI_NODE_ENGINES,
    build_group_headless_service,
    build_group_statefulset,
    build_group_user_service,
)
from inferfleet.planning.inventory import GpuNode, ProductCapacity
from inferfleet.planning.known_models import lookup_known_model
from inferfleet.planning.model_files import KnownFacts, MetadataFetch, ModelFacts
from inferfleet.planning.placement import (
    BoundPod,
    GroupPlacement,
    Reservation,
    Shortfall,
    compute_free_gpus,
    plan_groups,
)
from inferfleet.planning.policy import TenantPolicy, compute_policy_violations
from inferfleet.planning.spec_warnings import compute_model_mismatches
from inferfleet.planning.weights_naming import compute_cacheable

# Sizing needs a context length; an unset maxModelLen is budgeted as this many tokens.
DEFAULT_SIZING_CONTEXT = 8192


@dataclass(frozen=True, init=False)
class Blocked:
    """Why nothing can be deployed now; becomes Ready=False with this reason and an Event."""

    reason: ReadyReason
    message: str

    def __init__(self, reason: ReadyReason | str, message: str) -> None:
        # A reason given as a string must still be a ReadyReason: a misspelt one fails here.
        object.__setattr__(self, "reason", ReadyReason(reason))
        object.__setattr__(self, "message", message)


@dataclass(frozen=True)
class GroupInputs:
    """What placing multi-node replica groups needs to know about the cluster."""

    gpu_nodes: Sequence[GpuNode] = ()
    bound: Sequence[BoundPod] = ()
    reservations: Sequence[Reservation] = ()
    """Every group's placement, this service's included (their GPUs are taken)."""
    existing: Mapping[int, GroupPlacement] = field(default_factory=dict)
    """This service's groups that exist now, by replica index: they keep their nodes."""
    refused: frozenset[str] = frozenset()
    """Nodes where the scheduler recently could not bind a planned member: new groups avoid them."""
    warm: frozenset[str] = frozenset()
    """Nodes whose weights cache holds the model: among equal placements, new groups prefer them."""


@dataclass(frozen=True)
class ServicePlan:
    shard_plan: ShardPlan | None = None
    children: list[dict[str, Any]] = field(default_factory=list)
    blocked: Blocked | None = None
    placements: Mapping[int, GroupPlacement] = field(default_factory=dict)
    shortfalls: Mapping[int, Shortfall] = field(default_factory=dict)
    surplus_groups: tuple[int, ...] = ()
    """Existing groups beyond spec.replicas, to delete (highest replica index first)."""
    model: ModelStatus | None = None
    """What is known about the model (status.model)."""
    model_mismatches: tuple[str, ...] = ()
    """Where the spec contradicts the model's known facts, one message each."""
    placed_reasons: Mapping[int, PlacedReason] = field(default_factory=dict)
    """Why waiting groups wait, when more is known than "insufficient capacity" (node autoscaling)."""

    @property
    def multi_node(self) -> bool:
        return self.shard_plan is not None and self.shard_plan.pods_per_replica > 1


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
                ReadyReason.NO_MATCHING_NODES,
                f"no schedulable node offers {acc.resource_name} of product {acc.product} "
                f"(node label nvidia.com/gpu.product); products in the cluster: {available}",
            )
        candidates = [products[acc.product]]
    else:
        candidates = list(products.values())
        if not candidates:
            return Blocked(ReadyReason.NO_MATCHING_NODES, f"no schedulable node offers {acc.resource_name}")
    # What the nodes report is the truth; the spec's numbers are for planning without a cluster.
    reported = [c.gpu_memory_gib for c in candidates if c.gpu_memory_gib is not None]
    memory = min(reported) if reported else acc.memory_gib
    if memory is None:
        return Blocked(
            ReadyReason.UNKNOWN_GPU_MEMORY,
            "GPU memory is unknown: set spec.accelerator.memoryGiB or label the nodes nvidia.com/gpu.memory",
        )
    # Without a product any node may be chosen, so plan for the smallest one.
    return GpuShape(memory_gib=memory, gpus_per_node=min(c.gpus_per_node for c in candidates))


def build_architecture(arch: ArchitectureSpec | None) -> sizing.Architecture | None:
    if arch is None:
        return None
    return sizing.Architecture(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
    )


def compute_known_facts(spec: InferenceServiceSpec, files: ModelFacts | None = None) -> KnownFacts | None:
    """The model's facts: its files' when they were read, else the table's, else none."""
    if files is not None:
        return KnownFacts(ModelFactsSource.FILES, files)
    known = lookup_known_model(spec.model.source, spec.model.name)
    return KnownFacts(ModelFactsSource.KNOWN_MODELS, known.facts, known.repo) if known else None


METADATA_REASONS = frozenset({ReadyReason.MODEL_METADATA_PENDING, ReadyReason.MODEL_METADATA_FAILED})
"""A service blocked with these waits for its model's facts: the weights cache reads them."""
_SET_IT = "set spec.model.parametersBillions (and spec.model.architecture from the model's config.json)"


def _pending_message(
    spec: InferenceServiceSpec, known: KnownFacts | None, metadata: MetadataFetch | None = None
) -> str:
    """Why sizing waits for the parameter count, and what ends the wait. `metadata`: the metadata
    Job's progress (None: the node weights cache, which runs it, is off)."""
    source = spec.model.source
    if known is not None:
        why = f"{known.origin} do not give it (no safetensors index or header, no known config.json family)"
    elif metadata is None:
        why = f"{source} is not one of inferfleet's known models and its files have not been read"
        if compute_cacheable(source):
            return (
                f"waiting for the model's parameter count: spec.model.parametersBillions is unset and {why}; "
                f"{_SET_IT}, or turn on the node weights cache (chart value modelCache.root, operator flag "
                "--model-cache-root), which reads them from the model's config.json and safetensors headers"
            )
    elif metadata.done:
        why = f"the model's files ({source}, read by Job {metadata.job}) hold no config.json it could read"
    elif metadata.error is not None:
        return (
            f"reading the facts of {source} from its files failed (Job {metadata.job}, {metadata.retry}): "
            f"{metadata.error}; fix the source or its credentials (spec.engine.env), or {_SET_IT}"
        )
    else:
        job = f"Job {metadata.job}" if metadata.job else "a Job"
        return (
            f"waiting for the model's parameter count: {job} is reading {source}'s config.json, safetensors "
            f"index and safetensors headers (attempt {metadata.attempt}, no weights are downloaded); "
            f"or {_SET_IT}"
        )
    return (
        f"waiting for the model's parameter count: spec.model.parametersBillions is unset and {why}; "
        f"{_SET_IT}"
    )


def build_sizing_input(
    spec: InferenceServiceSpec, gpu: GpuShape, known: KnownFacts | None = None
) -> sizing.SizingInput:
    """The spec's numbers as given; a parameter count the spec leaves out comes, with the
    architecture when the spec has none, from the model's known facts (ModelMetadataPendingError
    when there are none)."""
    billions, arch = spec.model.parameters_billions, build_architecture(spec.model.architecture)
    if billions is None:
        if known is None or known.facts.parameters is None:
            raise sizing.ModelMetadataPendingError(_pending_message(spec, known))
        billions, arch = known.facts.parameters / 1e9, arch or known.facts.architecture
    manual = spec.sharding.mode == ShardingMode.MANUAL
    return sizing.SizingInput(
        parameters_billions=billions,
        dtype=spec.model.dtype,
        max_model_len=spec.model.max_model_len or DEFAULT_SIZING_CONTEXT,
        gpu_memory_gib=gpu.memory_gib,
        gpus_per_node=gpu.gpus_per_node,
        architecture=arch,
        tensor_parallel=spec.sharding.tensor_parallel if manual else None,
        pipeline_parallel=spec.sharding.pipeline_parallel if manual else None,
    )


def build_model_architecture(arch: sizing.Architecture | None) -> ModelArchitecture | None:
    if arch is None:
        return None
    return ModelArchitecture(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
    )


def build_model_status(spec: InferenceServiceSpec, known: KnownFacts | None) -> ModelStatus:
    """status.model: the model's known facts, else what the spec says."""
    if known is None:
        billions = spec.model.parameters_billions
        return ModelStatus(
            source=ModelFactsSource.SPEC,
            parameters=round(billions * 1e9) if billions is not None else None,
            dtype=spec.model.dtype,
            architecture=build_model_architecture(build_architecture(spec.model.architecture)),
        )
    facts = known.facts
    return ModelStatus(
        source=known.source,
        known_model=known.reference,
        model_type=facts.model_type,
        parameters=facts.parameters,
        dtype=facts.dtype,
        architecture=build_model_architecture(facts.architecture),
    )


def plan_service(
    owner: Owner,
    spec: InferenceServiceSpec,
    products: Mapping[str, ProductCapacity],
    groups: GroupInputs | None = None,
    scheduler_name: str | None = None,
    policy: TenantPolicy | None = None,
    model_files: ModelFacts | None = None,
    metadata: MetadataFetch | None = None,
) -> ServicePlan:
    """`scheduler_name` applies to single-pod replicas; groups are placed here, whole. A spec the
    installation's `policy` refuses is planned no further (nothing of it is applied).
    `model_files` are the facts of the model's files, once read (`model_files.build_model_facts`);
    `metadata`: how reading them without the weights goes (None: the weights cache is off)."""
    known = compute_known_facts(spec, model_files)
    plan = _plan_service(owner, spec, products, groups, scheduler_name, policy, known, metadata)
    mismatches = tuple(compute_model_mismatches(spec, known))
    return replace(plan, model=build_model_status(spec, known), model_mismatches=mismatches)


def _plan_service(
    owner: Owner,
    spec: InferenceServiceSpec,
    products: Mapping[str, ProductCapacity],
    groups: GroupInputs | None,
    scheduler_name: str | None,
    policy: TenantPolicy | None,
    known: KnownFacts | None,
    metadata: MetadataFetch | None = None,
) -> ServicePlan:
    violations = compute_policy_violations(spec, policy or TenantPolicy())
    if violations:
        return ServicePlan(blocked=Blocked(ReadyReason.POLICY_VIOLATION, "; ".join(violations)))
    if spec.model.parameters_billions is None and (known is None or known.facts.parameters is None):
        # Before the GPUs: no cluster change can end this wait.
        failed = known is None and metadata is not None and metadata.error is not None
        reason = ReadyReason.MODEL_METADATA_FAILED if failed else ReadyReason.MODEL_METADATA_PENDING
        return ServicePlan(blocked=Blocked(reason, _pending_message(spec, known, metadata)))
    gpu = resolve_gpu(spec, products)
    if isinstance(gpu, Blocked):
        return ServicePlan(blocked=gpu)
    try:
        shards = sizing.plan_shards(build_sizing_input(spec, gpu, known))
    except sizing.SizingError as e:
        return ServicePlan(blocked=Blocked(e.reason, str(e)))
    if shards.pods_per_replica > 1:
        return plan_multi_node(owner, spec, shards, groups or GroupInputs())
    children = [
        build_deployment(owner, spec, shards, scheduler_name),
        build_service(owner, spec),
        build_pdb(owner, spec),
    ]
    return ServicePlan(shard_plan=shards, children=children)


def plan_multi_node(
    owner: Owner, spec: InferenceServiceSpec, shards: ShardPlan, groups: GroupInputs
) -> ServicePlan:
    """Whole groups or nothing: a replica's objects exist only once all its nodes are chosen."""
    if spec.engine.kind not in MULTI_NODE_ENGINES:
        kind = spec.engine.kind.value
        message = f"one replica needs {shards.pods_per_replica} nodes and {kind} has no multi-node serving"
        return ServicePlan(shard_plan=shards, blocked=Blocked(ReadyReason.ENGINE_NOT_MULTI_NODE, message))
    wanted = range(spec.replicas)
    kept = {r: p for r, p in groups.existing.items() if r < spec.replicas}
    free = compute_free_gpus(
        groups.gpu_nodes,
        spec.accelerator.product,
        spec.sharding.topology_key,
        groups.bound,
        groups.reservations,
        spec.scheduling,
    )
    new = plan_groups(
        [f for f in free if f.name not in groups.refused],
        [r for r in wanted if r not in kept],
        shards.pods_per_replica,
        shards.gpus_per_pod,
        product=spec.accelerator.product,
        topology_key=spec.sharding.topology_key,
        warm=groups.warm,
    )
    placements = {**kept, **{r: p for r, p in new.items() if isinstance(p, GroupPlacement)}}
    shortfalls = {r: p for r, p in new.items() if isinstance(p, Shortfall)}
    children: list[dict[str, Any]] = []
    for replica, placement in sorted(placements.items()):
        children.append(build_group_statefulset(owner, spec, shards, replica, placement))
        children.append(build_group_headless_service(owner, spec, replica))
    children += [build_group_user_service(owner, spec), build_pdb(owner, spec)]
    surplus = tuple(sorted((r for r in groups.existing if r >= spec.replicas), reverse=True))
    return ServicePlan(
        shard_plan=shards,
        children=children,
        placements=placements,
        shortfalls=shortfalls,
        surplus_groups=surplus,
    )
