"""The InferenceService API (inferfleet.io/v1alpha1): pydantic models, the source of truth.

The CRD in crds/ is generated from these models by `inferfleet.api.crd`.
"""

from inferfleet.api.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InferenceService,
    parse_inference_service,
)
from inferfleet.api.spec import (
    AcceleratorSpec,
    ArchitectureSpec,
    Dtype,
    EngineKind,
    EngineSpec,
    EnvVar,
    InferenceServiceSpec,
    ModelSpec,
    ScalingSpec,
    SchedulingSpec,
    ShardingMode,
    ShardingSpec,
    Toleration,
)
from inferfleet.api.status import (
    Condition,
    ConditionStatus,
    InferenceServiceStatus,
    Phase,
    ReplicaPlacement,
    ShardPlan,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AcceleratorSpec",
    "ArchitectureSpec",
    "Condition",
    "ConditionStatus",
    "Dtype",
    "EngineKind",
    "EngineSpec",
    "EnvVar",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "ModelSpec",
    "Phase",
    "ReplicaPlacement",
    "ScalingSpec",
    "SchedulingSpec",
    "ShardPlan",
    "ShardingMode",
    "ShardingSpec",
    "Toleration",
    "parse_inference_service",
]
