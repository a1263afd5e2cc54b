"""`InferenceService.status`: what the operator observed and decided.

Status models ignore unknown fields, so an older operator can read a newer one's status.
Write it with `model_dump(exclude_none=True)`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from inferfleet.api.common import KubeModel


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


class StatusModel(KubeModel):
    model_config = ConfigDict(extra="ignore")


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

    @model_validator(mode="after")
    def _fill_derived(self) -> Self:
        if self.total_gpus is None:
            self.total_gpus = self.gpus_per_pod * self.pods_per_replica
        if self.layout is None:
            self.layout = f"{self.tensor_parallel}x{self.pipeline_parallel}"
        return self


class ReplicaPlacement(StatusModel):
    replica: int = Field(ge=0, description="Replica index.")
    domain: str = Field(description="Value of sharding.topologyKey shared by the replica's nodes.")
    nodes: list[str] = Field(default_factory=list, description="Nodes of the replica's pods, by shard rank.")


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
    placement: list[ReplicaPlacement] = Field(
        default_factory=list, description="Where each replica's pods are placed."
    )
    scaling_history: list[ScalingEvent] = Field(
        default_factory=list, description="The autoscaler's most recent decisions that changed replicas."
    )
    autoscaler: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The autoscaler's stabilization windows, kept so that operator restarts keep them.",
    )
