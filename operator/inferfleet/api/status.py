"""`InferenceService.status`: what the operator observed and decided, and why.

The operator builds these models and writes `InferenceServiceStatus.dump()`: a misspelt or unknown
field is an error where the status is built (`extra="forbid"`), never a key the API server silently
prunes. A status read back from the cluster (`InferenceServiceStatus.read`) drops what this version
does not know, so an older operator can read a newer one's status.

Condition reasons are enums, one per condition type; a condition's `reason` stays a string on the
wire, so a newer operator's reasons never break an older one's reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Self

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

from inferfleet.api import limits
from inferfleet.api.common import KubeModel
from inferfleet.api.spec import Dtype

READ_CONTEXT = {"read": True}
"""Validation context for a status written by someone else: unknown fields are dropped."""


class Phase(StrEnum):
    PENDING = "Pending"
    PLACING = "Placing"
    DEPLOYING = "Deploying"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    READY = "Ready"
    PLACED = "Placed"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING_LIMITED = "ScalingLimited"
    MODEL_CONSISTENT = "ModelConsistent"


class ReadyReason(StrEnum):
    """Why Ready is what it is; also the reason of the Event posted when it changes."""

    # Waiting for the cluster: nodes that appear or free up can end these without a spec change.
    NO_MATCHING_NODES = "NoMatchingNodes"
    UNKNOWN_GPU_MEMORY = "UnknownGpuMemory"
    MODEL_DOES_NOT_FIT = "ModelDoesNotFit"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    # A replica group's nodes are asked of the node autoscaler (ProvisioningRequest), or refused.
    WAITING_FOR_NODES = "WaitingForNodes"
    NODES_UNAVAILABLE = "NodesUnavailable"
    # Waiting for the model's facts: its parameter count is neither in the spec nor known.
    MODEL_METADATA_PENDING = "ModelMetadataPending"
    MODEL_METADATA_FAILED = "ModelMetadataFailed"
    """Reading the model's facts from its files (the metadata Job) failed; it may be retried."""
    # Refused: the spec must change.
    INVALID_SPEC = "InvalidSpec"
    POLICY_VIOLATION = "PolicyViolation"
    ENGINE_NOT_MULTI_NODE = "EngineNotMultiNode"
    # A child object could not be applied.
    NAME_CONFLICT = "NameConflict"
    APPLY_FAILED = "ApplyFailed"
    # The engine pods.
    DEPLOYING = "Deploying"
    ROLLING_OUT = "RollingOut"
    POD_CREATION_FAILED = "PodCreationFailed"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ALL_REPLICAS_READY = "AllReplicasReady"
    SCALED_TO_ZERO = "ScaledToZero"


class PlacedReason(StrEnum):
    """Multi-node services: whether every replica group has its nodes."""

    ALL_REPLICAS_PLACED = "AllReplicasPlaced"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    WAITING_FOR_NODES = "WaitingForNodes"
    """A ProvisioningRequest asks the cluster's node autoscaler for a waiting group's nodes."""
    NODES_UNAVAILABLE = "NodesUnavailable"
    """The node autoscaler answered a group's ProvisioningRequest with Failed."""


class ModelReason(StrEnum):
    """Whether the spec's parametersBillions, dtype and architecture agree with the model's own
    facts (its files, or inferfleet's table of well-known models); set only when such facts exist."""

    SPEC_MATCHES_MODEL = "SpecMatchesModel"
    SPEC_CONTRADICTS_MODEL = "SpecContradictsModel"


class ModelFactsSource(StrEnum):
    """Where status.model's facts come from."""

    SPEC = "Spec"
    KNOWN_MODELS = "KnownModels"
    FILES = "Files"


class WeightsState(StrEnum):
    """A model's weights in one node's cache (for the service's namespace)."""

    PRESENT = "Present"
    FETCHING = "Fetching"
    FAILED = "Failed"
    EVICTING = "Evicting"


class WeightsReason(StrEnum):
    """Why a node's weights are in their state: also the reason of the Event on a failed fetch."""

    FETCHED = "Fetched"
    FETCH_RUNNING = "FetchRunning"
    FETCH_FAILED = "FetchFailed"
    OVER_BUDGET = "OverBudget"
    """Evicted: the least recently used weights on a node over its cache budget."""


class MetricsReason(StrEnum):
    """Whether the autoscaler has a fresh queue sample, and why not."""

    QUEUE_DEPTH_REPORTED = "QueueDepthReported"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    CUSTOM_QUERY_DISABLED = "CustomQueryDisabled"
    INVALID_QUERY = "InvalidQuery"


class ScalingReason(StrEnum):
    """Why the autoscaler decided what it did: the reason of a scalingHistory entry, of the Event
    posted for a change and of ScalingLimited=True (UpperCamel, as Kubernetes reasons)."""

    QUEUE_ABOVE_TARGET = "QueueAboveTarget"
    LOAD_ABOVE_CAPACITY = "LoadAboveCapacity"
    REPLICAS_STARTING = "ReplicasStarting"
    LOAD_BELOW_CAPACITY = "LoadBelowCapacity"
    STABILIZING_SCALE_DOWN = "StabilizingScaleDown"
    STABILIZING_SCALE_UP = "StabilizingScaleUp"
    AT_MAX_REPLICAS = "AtMaxReplicas"
    AT_MIN_REPLICAS = "AtMinReplicas"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    SCALE_TO_ZERO = "ScaleToZero"
    SCALE_FROM_ZERO = "ScaleFromZero"
    STEADY = "Steady"


class ScalingLimitedReason(StrEnum):
    """ScalingLimited=False; when True its reason is the decision's `ScalingReason`."""

    WITHIN_BOUNDS = "WithinBounds"


ConditionReason = (
    ReadyReason | PlacedReason | MetricsReason | ScalingReason | ScalingLimitedReason | ModelReason
)


class EventReason(StrEnum):
    """Reasons of Events that are not a condition's reason."""

    LITERAL_SECRET_IN_SPEC = "LiteralSecretInSpec"
    METRICS_AVAILABLE = "MetricsAvailable"
    """Queue metrics are back (the MetricsAvailable condition turned True)."""
    INFERENCE_POOL_NOT_APPLIED = "InferencePoolNotApplied"
    """Its InferencePool (for a cluster's own inference gateway) could not be applied; the
    service itself is unaffected."""


class StatusModel(KubeModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_when_read(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, Mapping) and info.context == READ_CONTEXT:
            known = {*cls.model_fields, *(f.alias for f in cls.model_fields.values() if f.alias)}
            return {key: value for key, value in data.items() if key in known}
        return data

    def dump(self) -> dict[str, Any]:
        """What the operator writes: camelCase, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(StatusModel):
    type: str = Field(min_length=1, description="Condition type, e.g. Ready, Placed, MetricsAvailable.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="One-word CamelCase reason for the status.")
    message: str | None = Field(default=None, description="Human-readable details.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: str | None = Field(
        default=None, description="When status last changed (RFC 3339, e.g. 2025-01-31T12:00:00Z)."
    )


class ShardPlan(StatusModel):
    """How one replica is split over GPUs and pods: what `planning.sizing` plans, the builders
    build from and the status shows."""

    model_config = ConfigDict(frozen=True)

    tensor_parallel: int = Field(ge=1, description="Tensor-parallel degree (GPUs per shard, within a node).")
    pipeline_parallel: int = Field(ge=1, description="Pipeline-parallel degree (stages, one pod each).")
    gpus_per_pod: int = Field(ge=1, description="GPUs each pod of a replica requests.")
    pods_per_replica: int = Field(ge=1, description="Pods per replica: 1, or a leader plus workers.")
    total_gpus: int | None = Field(
        default=None, ge=1, description="GPUs one replica uses: gpusPerPod x podsPerReplica."
    )
    weights_gib: float | None = Field(
        default=None, ge=0, alias="weightsGiB", description="Model weights in GiB, whole replica."
    )
    kv_cache_gib: float | None = Field(
        default=None, ge=0, alias="kvCacheGiB", description="KV cache planned per replica in GiB."
    )
    per_gpu_gib: float | None = Field(
        default=None, ge=0, alias="perGpuGiB", description="Memory planned on each GPU in GiB."
    )
    layout: str | None = Field(
        default=None, description="tensorParallel x pipelineParallel, e.g. 4x1 (shown by kubectl get)."
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_derived(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data

        def get(name: str) -> Any:
            return data.get(name, data.get(to_camel(name)))

        derived: dict[str, Any] = {}
        per_pod, pods = get("gpus_per_pod"), get("pods_per_replica")
        if get("total_gpus") is None and isinstance(per_pod, int) and isinstance(pods, int):
            derived["total_gpus"] = per_pod * pods
        if get("layout") is None:
            derived["layout"] = f"{get('tensor_parallel')}x{get('pipeline_parallel')}"
        return {**data, **derived}


class ModelArchitecture(StatusModel):
    """The transformer shape sizing uses, in spec.model.architecture's terms."""

    model_config = ConfigDict(frozen=True)

    num_layers: int = Field(ge=1, description="Transformer layers (config.json num_hidden_layers).")
    hidden_size: int = Field(ge=1, description="Hidden size (config.json hidden_size).")
    num_attention_heads: int = Field(ge=1, description="Attention (query) heads.")
    num_key_value_heads: int | None = Field(
        default=None,
        ge=1,
        description="Key/value heads (grouped-query attention); 1 for multi-head latent attention, "
        "whose one cached latent per token is counted as one head.",
    )
    head_dim: int | None = Field(default=None, ge=1, description="Size of one cached head.")


class ModelStatus(StatusModel):
    """What is known about the served model, and from where."""

    model_config = ConfigDict(frozen=True)

    source: ModelFactsSource = Field(
        description="Spec (only what the spec says is known), KnownModels (inferfleet's table of "
        "well-known models, from their config.json files) or Files (the model's own config.json "
        "and safetensors metadata)."
    )
    known_model: str | None = Field(
        default=None, description="The repository the facts were copied from (source KnownModels)."
    )
    model_type: str | None = Field(default=None, description="config.json model_type, e.g. llama.")
    parameters: int | None = Field(default=None, ge=1, description="Exact parameter count.")
    dtype: Dtype | None = Field(default=None, description="Precision of the stored weights.")
    architecture: ModelArchitecture | None = Field(default=None, description="Transformer shape.")


class ReplicaPlacement(StatusModel):
    replica: int = Field(ge=0, description="Replica index.")
    domain: str = Field(description="Value of sharding.topologyKey shared by the replica's nodes.")
    nodes: list[str] = Field(default_factory=list, description="Nodes of the replica's pods, by shard rank.")


class NodeWeights(StatusModel):
    """The model's weights in one node's cache, for this namespace (the cache is per namespace)."""

    node: str = Field(description="The node whose cache holds (or fetches) the weights.")
    state: WeightsState = Field(description="Present, Fetching, Failed or Evicting.")
    reason: WeightsReason = Field(description="Why, in one CamelCase word.")
    message: str | None = Field(default=None, description="The fetch's own words when it failed.")
    bytes: int | None = Field(default=None, ge=0, description="Size of the published weights.")
    revision: str | None = Field(default=None, description="The revision published on the node.")
    job: str | None = Field(default=None, description="The fetch Job (in this namespace).")
    last_used: str | None = Field(
        default=None, description="When a pod of this service last ran on the node (RFC 3339)."
    )
    prefetch: bool | None = Field(
        default=None,
        description="Kept here by spec.model.cache.prefetchNodes: no pod of the service runs on the "
        "node, so that a scale-up lands warm.",
    )


class StartupStatus(StatusModel):
    """How long this service's replicas took from pod creation to Ready (planning/startup.py)."""

    warm_seconds: float | None = Field(
        default=None, ge=0, description="Median of the recent starts on nodes whose cache held the weights."
    )
    cold_seconds: float | None = Field(
        default=None, ge=0, description="Median of the recent starts that downloaded the weights."
    )
    samples: int | None = Field(default=None, ge=0, description="Starts counted since the service began.")
    recent_warm: list[float] = Field(
        default_factory=list, max_length=9, description="Recent warm starts (s)."
    )
    recent_cold: list[float] = Field(
        default_factory=list, max_length=9, description="Recent cold starts (s)."
    )
    learned_until: float | None = Field(
        default=None, ge=0, description="Ready time (epoch seconds) of the newest counted pod."
    )
    counted_at_last: list[str] = Field(
        default_factory=list, max_length=64, description="The pods counted with exactly that Ready time."
    )


class ScalingEvent(StatusModel):
    time: str = Field(description="When the autoscaler decided (RFC 3339).")
    from_replicas: int = Field(alias="from", ge=0, description="Replicas before the decision.")
    to_replicas: int = Field(alias="to", ge=0, description="Replicas after the decision.")
    reason: str = Field(description="Why, in one CamelCase word (e.g. QueueAboveTarget).")
    message: str | None = Field(default=None, description="The numbers behind the decision.")


class InferenceServiceStatus(StatusModel):
    """Observed state of an InferenceService, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status reflects."
    )
    phase: Phase | None = Field(
        default=None,
        description="Summary: Pending, Placing, Deploying, Ready, Degraded or Failed; conditions say why.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Latest observations: Ready, Placed, MetricsAvailable, ScalingLimited, ...",
    )
    replicas: int | None = Field(default=None, ge=0, description="Replicas that exist (scale subresource).")
    ready_replicas: int | None = Field(default=None, ge=0, description="Replicas serving requests.")
    selector: str | None = Field(
        default=None, description="Label selector of the engine pods, for the scale subresource and HPA."
    )
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL of the service.")
    queue_depth: float | None = Field(
        default=None, ge=0, description="Waiting requests across replicas, as last measured."
    )
    last_scale_time: str | None = Field(
        default=None, description="When the autoscaler last changed replicas (RFC 3339)."
    )
    shard_plan: ShardPlan | None = Field(
        default=None, description="How one replica is split over GPUs and pods, and its memory budget."
    )
    model: ModelStatus | None = Field(
        default=None,
        description="The model's parameter count, dtype and shape, and where they come from.",
    )
    placement: list[ReplicaPlacement] | None = Field(
        default=None, description="Where each replica's pods are placed."
    )
    weights: list[NodeWeights] | None = Field(
        default=None,
        max_length=limits.MAX_WEIGHTS_NODES,
        description="The model's weights in each node's cache (with a cache root configured): "
        "failed and fetching nodes first, then the most recently used.",
    )
    scaling_history: list[ScalingEvent] | None = Field(
        default=None, description="The autoscaler's most recent decisions that changed replicas."
    )
    startup: StartupStatus | None = Field(
        default=None,
        description="Learned start-to-Ready durations, warm and cold: the autoscaler's lookahead.",
    )
    autoscaler: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The autoscaler's stabilization windows, kept so that operator restarts keep them.",
    )

    @classmethod
    def read(cls, raw: Mapping[str, Any] | None) -> Self:
        """A status as stored in the cluster. Fields this version does not know are dropped, and so
        is a field whose value it cannot read (a newer operator's), rather than failing the reconcile."""
        data = dict(raw or {})
        try:
            return cls.model_validate(data, context=READ_CONTEXT)
        except ValidationError as e:
            unreadable = {err["loc"][0] for err in e.errors() if err["loc"]}
            kept = {key: value for key, value in data.items() if key not in unreadable}
            return cls.model_validate(kept, context=READ_CONTEXT)

    def evolve(self, **changes: Any) -> Self:
        """A copy with `changes` (by field name), validated: a misspelt field is an error."""
        return self.model_validate({**dict(self), **changes})
