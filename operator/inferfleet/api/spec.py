"""`InferenceService.spec`: what a model owner writes.

Field descriptions become `kubectl explain` text. Cross-field rules are `CelRule`s: the CRD
carries them and the `model_validator`s below enforce the same condition and message.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from inferfleet.api import limits
from inferfleet.api.common import CelRule, SpecModel, cel_validations, enforce, float_field, int_field
from inferfleet.api.reserved import GENERATED_FLAGS, OPERATOR_ENV_NAMES, OPERATOR_PORTS, overridden_flag


class Dtype(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


class EngineKind(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    CUSTOM = "custom"


class ShardingMode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


TENSOR_PARALLEL_DEGREES = (1, 2, 4, 8, 16, 32, 64)

KV_HEADS_DIVIDE_HEADS = CelRule(
    rule="!has(self.numKeyValueHeads) || self.numAttentionHeads % self.numKeyValueHeads == 0",
    message="numAttentionHeads must be divisible by numKeyValueHeads",
    field_path=".numKeyValueHeads",
    reason="FieldValueInvalid",
)
CUSTOM_ENGINE_NEEDS_IMAGE = CelRule(
    rule="self.kind != 'custom' || has(self.image)",
    message="image is required when kind is custom",
    field_path=".image",
    reason="FieldValueRequired",
)
MANUAL_SHARDING_NEEDS_TP = CelRule(
    rule="self.mode != 'manual' || has(self.tensorParallel)",
    message="tensorParallel is required in manual mode",
    field_path=".tensorParallel",
    reason="FieldValueRequired",
)
PARALLELISM_ONLY_IN_MANUAL = CelRule(
    rule="self.mode == 'manual' || (!has(self.tensorParallel) && !has(self.pipelineParallel))",
    message="tensorParallel and pipelineParallel are set only in manual mode",
    reason="FieldValueForbidden",
)
TP_POWER_OF_TWO = CelRule(
    rule="!has(self.tensorParallel) || self.tensorParallel in [1, 2, 4, 8, 16, 32, 64]",
    message="tensorParallel must be a power of two",
    field_path=".tensorParallel",
    reason="FieldValueInvalid",
)
PREFETCH_NEEDS_CACHED_SOURCE = CelRule(
    rule="!has(self.cache) || !has(self.cache.prefetchNodes) || self.cache.prefetchNodes == 0 "
    "|| self.source.startsWith('hf://') || self.source.startsWith('s3://')",
    message="cache.prefetchNodes needs an hf:// or s3:// source (the node cache fetches only those)",
    field_path=".cache.prefetchNodes",
    reason="FieldValueForbidden",
)
ENV_VALUE_OR_VALUE_FROM = CelRule(
    rule="!has(self.value) || !has(self.valueFrom)",
    message="value and valueFrom are exclusive: set one of them",
    field_path=".valueFrom",
    reason="FieldValueForbidden",
)
ENV_NAME_NOT_OPERATORS = CelRule(
    rule=f"!(self.name in {list(OPERATOR_ENV_NAMES)!r})",
    message=f"name must not be one of {', '.join(OPERATOR_ENV_NAMES)}: inferfleet sets them",
    message_expression="'name ' + self.name + ' is set by inferfleet, use another name'",
    template="name {name} is set by inferfleet, use another name",
    field_path=".name",
    reason="FieldValueForbidden",
)
ENV_NAMES_UNIQUE = CelRule(
    rule="self.all(e, self.exists_one(f, f.name == e.name))",
    message="env names must be unique",
    message_expression="'env sets ' + self.map(e, e.name).filter(n, !self.exists_one(f, f.name == n))[0] "
    "+ ' more than once'",
    template="env sets {name} more than once",
    # Not FieldValueDuplicate: the API server then says only "Duplicate value", without the message.
    reason="FieldValueInvalid",
)
ENV_SOURCE_EXACTLY_ONE = CelRule(
    rule="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
    "has(self.resourceFieldRef)].exists_one(x, x)",
    message="valueFrom sets exactly one of secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef",
    reason="FieldValueInvalid",
)
_FLAG = "a.split('=')[0].replace('_', '-')"
_GENERATED_FLAGS_CEL = "{" + ", ".join(f"{k!r}: {list(v)!r}" for k, v in GENERATED_FLAGS.items()) + "}"
ARGS_DO_NOT_OVERRIDE = CelRule(
    rule=f"self.kind == 'custom' || !has(self.args) || !self.args.exists(a, {_FLAG} in "
    f"{_GENERATED_FLAGS_CEL}[self.kind])",
    message="args must not set a flag inferfleet generates from the spec",
    message_expression=f"'args must not set ' + self.args.map(a, {_FLAG}).filter(f, f in "
    f"{_GENERATED_FLAGS_CEL}[self.kind])[0] + ': inferfleet sets it for ' + self.kind",
    template="args must not set {flag}: inferfleet sets it for {kind}",
    field_path=".args",
    reason="FieldValueForbidden",
)
_OPERATOR_PORTS_CEL = "{" + ", ".join(f"{k!r}: {v}" for k, v in OPERATOR_PORTS.items()) + "}"
_PORT_MESSAGE = "port {port} is used by inferfleet for {kind} multi-node groups, choose another"
# The messages spelled out per engine: CEL's string(int) is priced as an unbounded string.
_PORT_MESSAGES_CEL = (
    "{"
    + ", ".join(f"{k!r}: {_PORT_MESSAGE.format(port=v, kind=k)!r}" for k, v in OPERATOR_PORTS.items())
    + "}"
)
PORT_NOT_OPERATORS = CelRule(
    rule=f"!(self.kind in {_OPERATOR_PORTS_CEL}) || self.port != {_OPERATOR_PORTS_CEL}[self.kind]",
    message="port is used by inferfleet's multi-node groups of this engine, choose another",
    message_expression=f"{_PORT_MESSAGES_CEL}[self.kind]",
    template=_PORT_MESSAGE,
    field_path=".port",
    reason="FieldValueForbidden",
)
NODE_SELECTOR_KEYS_BOUNDED = CelRule(
    rule=f"!has(self.nodeSelector) || self.nodeSelector.all(k, k.size() <= {limits.QUALIFIED_NAME})",
    message=f"nodeSelector keys are label keys of at most {limits.QUALIFIED_NAME} characters",
    field_path=".nodeSelector",
    reason="FieldValueInvalid",
)
TP_DIVIDES_HEADS = CelRule(
    rule="!has(self.model.architecture) || !has(self.sharding.tensorParallel) || "
    "self.model.architecture.numAttentionHeads % self.sharding.tensorParallel == 0",
    message="sharding.tensorParallel must divide model.architecture.numAttentionHeads",
    field_path=".sharding.tensorParallel",
    reason="FieldValueInvalid",
)
TP_AND_KV_HEADS = CelRule(
    rule="!has(self.model.architecture) || !has(self.model.architecture.numKeyValueHeads) || "
    "!has(self.sharding.tensorParallel) || "
    "self.model.architecture.numKeyValueHeads % self.sharding.tensorParallel == 0 || "
    "self.sharding.tensorParallel % self.model.architecture.numKeyValueHeads == 0",
    message="sharding.tensorParallel and model.architecture.numKeyValueHeads: one must be a multiple "
    "of the other",
    field_path=".sharding.tensorParallel",
    reason="FieldValueInvalid",
)
PP_AT_MOST_LAYERS = CelRule(
    rule="!has(self.model.architecture) || !has(self.sharding.pipelineParallel) || "
    "self.sharding.pipelineParallel <= self.model.architecture.numLayers",
    message="sharding.pipelineParallel must be at most model.architecture.numLayers",
    field_path=".sharding.pipelineParallel",
    reason="FieldValueInvalid",
)
MIN_REPLICAS_LE_MAX = CelRule(
    rule="self.minReplicas <= self.maxReplicas",
    message="minReplicas must be less than or equal to maxReplicas",
    field_path=".minReplicas",
    reason="FieldValueInvalid",
)


class ArchitectureSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel_validations(KV_HEADS_DIVIDE_HEADS))

    num_layers: int = int_field(
        ge=1,
        le=limits.INT32_MAX,
        description="Number of transformer layers (config.json `num_hidden_layers`).",
    )
    hidden_size: int = int_field(
        ge=1, le=limits.INT32_MAX, description="Hidden (embedding) size (config.json `hidden_size`)."
    )
    num_attention_heads: int = int_field(
        ge=1,
        le=limits.INT32_MAX,
        description="Number of attention (query) heads (config.json `num_attention_heads`).",
    )
    num_key_value_heads: int | None = int_field(
        default=None,
        ge=1,
        le=limits.INT32_MAX,
        description="Number of key/value heads for grouped-query attention (config.json "
        "`num_key_value_heads`). Unset means numAttentionHeads (plain multi-head attention). "
        "Must divide numAttentionHeads; tensor parallelism is checked against it.",
    )
    head_dim: int | None = int_field(
        default=None,
        ge=1,
        le=limits.INT32_MAX,
        description="Size of one attention head. Unset means hiddenSize / numAttentionHeads.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        kv = self.num_key_value_heads
        enforce((KV_HEADS_DIVIDE_HEADS, kv is None or self.num_attention_heads % kv == 0))
        return self


class ModelCacheSpec(SpecModel):
    """The model's weights in the node cache (with a cache root configured by the platform)."""

    prefetch_nodes: int = int_field(
        default=0,
        le=limits.MAX_PREFETCH_NODES,
        description="Keep the weights on this many nodes beyond those serving, so that a scale-up "
        "lands on a node that already holds them. The operator picks nodes the service could run "
        "on, most free GPUs first, and keeps its choice while it still fits.",
    )


class ModelSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel_validations(PREFETCH_NEEDS_CACHED_SOURCE))

    name: str = Field(
        min_length=1,
        max_length=limits.DNS_SUBDOMAIN,
        description="Served model name: the `model` value clients send to the OpenAI-compatible API.",
    )
    source: str = Field(
        pattern=r"^(hf|s3|gs|pvc|oci)://.+",
        max_length=limits.SOURCE,
        description="Where the weights come from: hf://ORG/REPO (Hugging Face), s3://BUCKET/PATH, "
        "gs://BUCKET/PATH, pvc://CLAIM/PATH or oci://REGISTRY/IMAGE.",
    )
    parameters_billions: float | None = float_field(
        default=None,
        gt=0,
        le=limits.MAX_PARAMETERS_BILLIONS,
        description="Parameter count in billions (e.g. 70.6). With dtype it gives the weights' size "
        "used to pick GPUs and tensor/pipeline parallelism. Set: the replica is sized from it as "
        "given (the model's own facts are only compared, and a difference of more than 5% is "
        "reported). Unset: the exact count from the model's files or from inferfleet's table of "
        "well-known models (status.model says which); until one is known nothing is deployed.",
    )
    dtype: Dtype = Field(
        default=Dtype.BFLOAT16,
        description="Precision of the served weights; sets bytes per parameter for sizing. fp8, int8 "
        "and int4 mean a quantized checkpoint.",
    )
    architecture: ArchitectureSpec | None = Field(
        default=None,
        description="Transformer shape from the model's config.json. Optional; when given, KV-cache "
        "sizing is exact and the tensor-parallel degree is checked against the head counts. With "
        "parametersBillions unset, the shape of the model's files or of the known model is used; "
        "otherwise one assumed from the parameter count. A shape that contradicts the model's "
        "known one is reported.",
    )
    max_model_len: int | None = int_field(
        default=None,
        ge=1,
        le=limits.INT32_MAX,
        description="Maximum context length in tokens (prompt + output) the engine accepts; sizes "
        "the KV cache. Unset means the model's own maximum as the engine reads it.",
    )
    cache: ModelCacheSpec | None = Field(
        default=None, description="The node weights cache: how many nodes keep the weights warm."
    )

    @model_validator(mode="after")
    def _check_cache(self) -> Self:
        prefetch = self.cache.prefetch_nodes if self.cache else 0
        cached = self.source.startswith(("hf://", "s3://"))
        enforce((PREFETCH_NEEDS_CACHED_SOURCE, prefetch == 0 or cached))
        return self


class KeySelector(SpecModel):
    """A key of a Secret or ConfigMap in the service's namespace."""

    name: str = Field(
        min_length=1, max_length=limits.DNS_SUBDOMAIN, description="Name of the Secret or ConfigMap."
    )
    key: str = Field(min_length=1, max_length=limits.DNS_SUBDOMAIN, description="The key to read.")
    optional: bool | None = Field(
        default=None, strict=True, description="Start the engine even if the key does not exist."
    )


class ObjectFieldSelector(SpecModel):
    field_path: str = Field(
        min_length=1,
        max_length=limits.PATH,
        description="Field of the pod, e.g. metadata.name, metadata.labels['KEY'] or status.podIP.",
    )
    api_version: str | None = Field(
        default=None, min_length=1, max_length=limits.DNS_LABEL, description="Version of fieldPath's schema."
    )


class ResourceFieldSelector(SpecModel):
    resource: str = Field(
        min_length=1,
        max_length=limits.DNS_LABEL,
        description="Container resource, e.g. limits.memory or requests.cpu.",
    )
    container_name: str | None = Field(
        default=None, min_length=1, max_length=limits.DNS_LABEL, description="Container; unset: this one."
    )
    divisor: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.DNS_LABEL,
        description="Quantity (a string, e.g. 1Mi) the value is divided by; unset: 1.",
    )


class EnvVarSource(SpecModel):
    """Where an environment variable's value comes from, as a Pod's EnvVarSource (exactly one)."""

    model_config = ConfigDict(json_schema_extra=cel_validations(ENV_SOURCE_EXACTLY_ONE))

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: ObjectFieldSelector | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource limit or request of a container."
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        sources = (self.secret_key_ref, self.config_map_key_ref, self.field_ref, self.resource_field_ref)
        enforce((ENV_SOURCE_EXACTLY_ONE, sum(s is not None for s in sources) == 1))
        return self


class EnvVar(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=cel_validations(ENV_VALUE_OR_VALUE_FROM, ENV_NAME_NOT_OPERATORS)
    )

    name: str = Field(
        min_length=1,
        max_length=limits.DNS_SUBDOMAIN,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Name of the environment variable: letters, digits, '_', '-' and '.', not "
        "starting with a digit. Not one inferfleet sets (" + ", ".join(OPERATOR_ENV_NAMES) + ").",
    )
    value: str | None = Field(
        default=None,
        max_length=limits.ENV_VALUE,
        description="Literal value. Do not combine with valueFrom; for a secret use valueFrom.",
    )
    value_from: EnvVarSource | None = Field(
        default=None,
        description="Source for the value, as in a Pod's EnvVar.valueFrom: exactly one of "
        "secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        enforce(
            (ENV_VALUE_OR_VALUE_FROM, self.value is None or self.value_from is None),
            (ENV_NAME_NOT_OPERATORS, self.name not in OPERATOR_ENV_NAMES, {"name": self.name}),
        )
        return self


Capability = Annotated[str, Field(min_length=1, max_length=limits.CAPABILITY)]


class Capabilities(SpecModel):
    add: list[Capability] = Field(
        default_factory=list, max_length=limits.CAPABILITIES, description="Capabilities to add."
    )
    drop: list[Capability] = Field(
        default_factory=list,
        max_length=limits.CAPABILITIES,
        description='Capabilities to drop, e.g. ["ALL"].',
    )


LOCALHOST_PROFILE_WITH_LOCALHOST = CelRule(
    rule="(self.type == 'Localhost') == has(self.localhostProfile)",
    message="localhostProfile is set exactly when type is Localhost",
    field_path=".localhostProfile",
    reason="FieldValueInvalid",
)


class SeccompProfile(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel_validations(LOCALHOST_PROFILE_WITH_LOCALHOST))

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = Field(description="Kind of profile.")
    localhost_profile: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.PATH,
        description="Profile file on the node, for type Localhost.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        localhost = self.type == "Localhost"
        enforce((LOCALHOST_PROFILE_WITH_LOCALHOST, localhost == (self.localhost_profile is not None)))
        return self


class EngineSecurityContext(SpecModel):
    """The engine container's securityContext, as in a Pod: the fields the Pod Security profiles
    check. Set it to run engines in a namespace that enforces `restricted`."""

    run_as_non_root: bool | None = Field(
        default=None,
        strict=True,
        description="Refuse to start the container as root. Most engine images run as root by "
        "default: set runAsUser to a user the image can run as.",
    )
    # int64 in a Pod, where Kubernetes accepts 0 to 2147483647.
    run_as_user: int | None = int_field(
        default=None, le=limits.INT32_MAX, int64=True, description="UID to run the engine as."
    )
    run_as_group: int | None = int_field(
        default=None, le=limits.INT32_MAX, int64=True, description="GID to run the engine as."
    )
    allow_privilege_escalation: bool | None = Field(
        default=None,
        strict=True,
        description="Whether a process can gain more privileges than its parent.",
    )
    read_only_root_filesystem: bool | None = Field(
        default=None,
        strict=True,
        description="Mount the root filesystem read-only (the engine then needs writable volumes for "
        "its caches).",
    )
    capabilities: Capabilities | None = Field(default=None, description="Linux capabilities.")
    seccomp_profile: SeccompProfile | None = Field(default=None, description="Seccomp profile.")


EngineArg = Annotated[str, Field(max_length=limits.ARG)]


class EngineSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=cel_validations(CUSTOM_ENGINE_NEEDS_IMAGE, ARGS_DO_NOT_OVERRIDE, PORT_NOT_OPERATORS)
    )

    kind: EngineKind = Field(
        description="Inference engine: vllm, sglang, tgi, or custom (your own image and args; "
        "inferfleet then only adds the port and the GPUs)."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.IMAGE,
        description="Engine container image. Optional for vllm, sglang and tgi (the operator's "
        "default for the engine is used); required for custom.",
    )
    args: list[EngineArg] = Field(
        default_factory=list,
        max_length=limits.ARGS,
        description="Extra engine command-line arguments, appended after the ones inferfleet "
        "generates (parallelism, max concurrent requests, prefix caching, ...). They may not set "
        "a flag inferfleet generates (--port, --tensor-parallel-size, ...): set the spec's field.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=limits.ENV,
        json_schema_extra=cel_validations(ENV_NAMES_UNIQUE),
        description="Extra environment variables for the engine container; names are unique.",
    )
    port: int = int_field(
        default=8000,
        ge=1,
        le=65535,
        description="Port the engine serves its HTTP API and metrics on (not 6379 for vllm nor 5000 "
        "for sglang: multi-node groups use them).",
    )
    max_concurrent_requests: int = int_field(
        default=256,
        ge=1,
        le=limits.MAX_CONCURRENT_REQUESTS,
        description="Requests one replica runs at once (the engine's running-batch limit, e.g. "
        "vLLM --max-num-seqs). Requests beyond it wait in the engine's queue.",
    )
    enable_prefix_caching: bool = Field(
        default=True,
        strict=True,
        description="Reuse the KV cache of shared prompt prefixes across requests.",
    )
    drain_seconds: int = int_field(
        default=120,
        ge=0,
        le=3600,
        description="When a replica is removed (scale-down, rollout), it first gets no new requests "
        "and finishes the ones it has, for at most this long, before the engine is stopped. "
        "0 stops at once. vllm, sglang and tgi only (their metrics say when they are idle).",
    )

    security_context: EngineSecurityContext | None = Field(
        default=None,
        description="securityContext of the engine container. Unset: the image's defaults (often "
        "root, which a namespace enforcing the restricted Pod Security profile refuses).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        kind = self.kind.value
        flag = overridden_flag(kind, self.args) if self.kind != EngineKind.CUSTOM else None
        names = [e.name for e in self.env]
        repeated = next((n for n in names if names.count(n) > 1), None)
        enforce(
            (CUSTOM_ENGINE_NEEDS_IMAGE, self.kind != EngineKind.CUSTOM or self.image is not None),
            (ARGS_DO_NOT_OVERRIDE, flag is None, {"flag": flag, "kind": kind}),
            (PORT_NOT_OPERATORS, OPERATOR_PORTS.get(kind) != self.port, {"port": self.port, "kind": kind}),
            (ENV_NAMES_UNIQUE, repeated is None, {"name": repeated}),
        )
        return self


class AcceleratorSpec(SpecModel):
    resource_name: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        max_length=limits.QUALIFIED_NAME,
        description="Extended resource the engine pods request, one per GPU.",
    )
    product: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.DNS_LABEL,
        description="GPU product to run on, matched against the node label nvidia.com/gpu.product "
        "(e.g. NVIDIA-H100-80GB-HBM3). Unset means any GPU product.",
    )
    memory_gib: float | None = float_field(
        default=None,
        gt=0,
        le=limits.MAX_GPU_MEMORY_GIB,
        alias="memoryGiB",
        description="Memory of one GPU in GiB. Optional when nodes carry the nvidia.com/gpu.memory "
        "label; needed to plan without a cluster.",
    )
    gpus_per_node: int | None = int_field(
        default=None,
        ge=1,
        le=64,
        description="GPUs per node. Optional when the cluster's nodes are visible; needed to plan "
        "without a cluster. Bounds tensor parallelism (which stays within a node).",
    )


class ShardingSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            MANUAL_SHARDING_NEEDS_TP, PARALLELISM_ONLY_IN_MANUAL, TP_POWER_OF_TWO
        )
    )

    mode: ShardingMode = Field(
        default=ShardingMode.AUTO,
        description="auto: inferfleet picks tensor and pipeline parallelism from the model's size "
        "and the GPUs. manual: you set tensorParallel (and optionally pipelineParallel).",
    )
    tensor_parallel: int | None = int_field(
        default=None,
        ge=1,
        le=limits.MAX_PARALLELISM,
        description="Manual mode only: GPUs one model shard spans inside a node; a power of two.",
    )
    pipeline_parallel: int | None = int_field(
        default=None,
        ge=1,
        le=limits.MAX_PARALLELISM,
        description="Manual mode only: pipeline stages, one pod (node) each. Unset means 1.",
    )
    topology_key: str = Field(
        default="topology.kubernetes.io/zone",
        min_length=1,
        max_length=limits.QUALIFIED_NAME,
        description="Node label whose value a replica's pods share: a multi-node replica is placed "
        "whole inside one domain (zone, rack, NVLink domain) or not at all.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        manual = self.mode == ShardingMode.MANUAL
        tp, pp = self.tensor_parallel, self.pipeline_parallel
        enforce(
            (MANUAL_SHARDING_NEEDS_TP, not manual or tp is not None),
            (PARALLELISM_ONLY_IN_MANUAL, manual or (tp is None and pp is None)),
            (TP_POWER_OF_TWO, tp is None or tp in TENSOR_PARALLEL_DEGREES),
        )
        return self


class ScalingSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel_validations(MIN_REPLICAS_LE_MAX))

    min_replicas: int = int_field(
        default=1, ge=0, le=limits.MAX_REPLICAS, description="Fewest replicas the autoscaler keeps."
    )
    max_replicas: int = int_field(
        default=8,
        ge=1,
        le=limits.MAX_REPLICAS,
        description="Most replicas the autoscaler creates (the installation may set a lower limit).",
    )
    target_queue_depth: float = float_field(
        default=4,
        gt=0,
        le=limits.MAX_TARGET_QUEUE_DEPTH,
        description="Target number of waiting (queued, not yet running) requests per replica; the "
        "autoscaler sizes the fleet to keep the queue near it.",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.QUERY,
        description="PromQL giving this service's total queue depth, overriding the engine's default "
        "(vllm: vllm:num_requests_waiting, sglang: sglang:num_queue_reqs, tgi: tgi_queue_size).",
    )
    scale_up_stabilization_seconds: int = int_field(
        default=0,
        le=limits.MAX_STABILIZATION_SECONDS,
        description="Scale up to the highest recommendation of this many past seconds (0 = at once).",
    )
    scale_down_stabilization_seconds: int = int_field(
        default=300,
        le=limits.MAX_STABILIZATION_SECONDS,
        description="Scale down only to the highest recommendation of this many past seconds, so "
        "short dips do not remove replicas.",
    )
    scale_to_zero_after_seconds: int | None = int_field(
        default=None,
        le=limits.MAX_SCALE_TO_ZERO_SECONDS,
        description="Scale to zero replicas after this many seconds without requests. Unset means "
        "never scale to zero.",
    )
    activation_timeout_seconds: int = int_field(
        default=300,
        ge=1,
        le=limits.MAX_WAIT_SECONDS,
        description="With minReplicas 0: how long the gateway holds a request for a service at zero "
        "replicas while it asks for one and the replica starts (then 503 with Retry-After).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        enforce((MIN_REPLICAS_LE_MAX, self.min_replicas <= self.max_replicas))
        return self


EXISTS_TOLERATES_ANY_VALUE = CelRule(
    rule="self.operator != 'Exists' || !has(self.value)",
    message="value must be unset when operator is Exists",
    field_path=".value",
    reason="FieldValueForbidden",
)
NO_KEY_NEEDS_EXISTS = CelRule(
    rule="has(self.key) || self.operator == 'Exists'",
    message="operator must be Exists when key is unset (a toleration of every taint)",
    field_path=".operator",
    reason="FieldValueInvalid",
)
SECONDS_ONLY_FOR_NO_EXECUTE = CelRule(
    rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    message="tolerationSeconds is set only with effect NoExecute",
    field_path=".tolerationSeconds",
    reason="FieldValueForbidden",
)
PRODUCT_NOT_IN_NODE_SELECTOR = CelRule(
    rule="!has(self.nodeSelector) || !('nvidia.com/gpu.product' in self.nodeSelector)",
    message="set the GPU product with spec.accelerator.product, not scheduling.nodeSelector",
    field_path=".nodeSelector",
    reason="FieldValueForbidden",
)


class Toleration(SpecModel):
    """A toleration of the engine pods (core/v1 Toleration); placement honours it too."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            EXISTS_TOLERATES_ANY_VALUE, NO_KEY_NEEDS_EXISTS, SECONDS_ONLY_FOR_NO_EXECUTE
        )
    )

    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.QUALIFIED_NAME,
        description="Taint key. Unset, with operator Exists: every taint.",
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal: the taint's value must be `value`; Exists: any value."
    )
    value: str | None = Field(
        default=None,
        max_length=limits.DNS_LABEL,
        description="Taint value to match, with operator Equal.",
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match. Unset: every effect."
    )
    toleration_seconds: int | None = int_field(
        default=None,
        le=limits.INT32_MAX,
        int64=True,
        description="Effect NoExecute only: how long a pod stays on a node after the taint appears.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        enforce(
            (EXISTS_TOLERATES_ANY_VALUE, self.operator != "Exists" or self.value is None),
            (NO_KEY_NEEDS_EXISTS, self.key is not None or self.operator == "Exists"),
            (SECONDS_ONLY_FOR_NO_EXECUTE, self.toleration_seconds is None or self.effect == "NoExecute"),
        )
        return self


LabelValue = Annotated[str, Field(max_length=limits.DNS_LABEL)]


class SchedulingSpec(SpecModel):
    """Where engine pods may run besides the GPU product: a node pool, tainted nodes, a priority."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(PRODUCT_NOT_IN_NODE_SELECTOR, NODE_SELECTOR_KEYS_BOUNDED)
    )

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=limits.NODE_SELECTOR,
        description="Labels the engine pods' nodes must carry as well (a node pool, say). Sizing "
        "and placement count only those nodes.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=limits.TOLERATIONS,
        description="Taints the engine pods tolerate besides the GPU resource's own (always "
        "tolerated), e.g. a dedicated GPU pool's sku=gpu:NoSchedule. A node with a NoSchedule or "
        "NoExecute taint they do not tolerate is not planned on.",
    )
    priority_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.DNS_SUBDOMAIN,
        description="PriorityClass of the engine pods (it must exist).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        long_key = all(len(k) <= limits.QUALIFIED_NAME for k in self.node_selector)
        enforce(
            (PRODUCT_NOT_IN_NODE_SELECTOR, "nvidia.com/gpu.product" not in self.node_selector),
            (NODE_SELECTOR_KEYS_BOUNDED, long_key),
        )
        return self


class GatewaySpec(SpecModel):
    """How the gateway queues this service's requests in front of its replicas."""

    max_queued_requests: int = int_field(
        default=1000,
        le=limits.MAX_QUEUED_REQUESTS,
        description="Requests a gateway replica holds waiting for a free slot (each replica has "
        "engine.maxConcurrentRequests slots); beyond it a request gets 429 with Retry-After. "
        "0 queues nothing.",
    )
    queue_timeout_seconds: int = int_field(
        default=60,
        ge=1,
        le=limits.MAX_WAIT_SECONDS,
        description="Longest a request waits in the queue for a slot before it gets 503 with Retry-After.",
    )


class InferenceServiceSpec(SpecModel):
    """Desired state of an InferenceService: the model, its engine, the GPUs and the scaling policy."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(TP_DIVIDES_HEADS, TP_AND_KV_HEADS, PP_AT_MOST_LAYERS)
    )

    model: ModelSpec = Field(description="The model to serve and what sizing needs to know about it.")
    engine: EngineSpec = Field(description="The inference engine that serves the model.")
    # The CRD defaults carry the nested defaults: the API server checks a default against the CEL
    # rules as written, without defaulting inside it.
    accelerator: AcceleratorSpec = Field(
        default_factory=AcceleratorSpec,
        json_schema_extra={"default": AcceleratorSpec().model_dump(mode="json", exclude_none=True)},
        description="The GPUs to run on.",
    )
    sharding: ShardingSpec = Field(
        default_factory=ShardingSpec,
        json_schema_extra={"default": ShardingSpec().model_dump(mode="json", exclude_none=True)},
        description="How one replica is split across GPUs and nodes.",
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec,
        description="Node pool, tolerations and priority of the engine pods.",
    )
    gateway: GatewaySpec = Field(
        default_factory=GatewaySpec,
        description="The request queue in front of the replicas, at inferfleet's gateway.",
    )
    scaling: ScalingSpec | None = Field(
        default=None,
        description="Queue-depth autoscaling. Unset means no autoscaling: replicas is set by you "
        "or by an external autoscaler through the scale subresource.",
    )
    replicas: int = int_field(
        default=1,
        le=limits.MAX_REPLICAS,
        description="Desired number of replicas (the scale subresource). With scaling set, the "
        "autoscaler writes it. At most 1000 (the installation may set a lower limit).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        arch, tp, pp = self.model.architecture, self.sharding.tensor_parallel, self.sharding.pipeline_parallel
        if arch is None:
            return self
        kv = arch.num_key_value_heads
        enforce(
            (TP_DIVIDES_HEADS, tp is None or arch.num_attention_heads % tp == 0),
            (TP_AND_KV_HEADS, tp is None or kv is None or kv % tp == 0 or tp % kv == 0),
            (PP_AT_MOST_LAYERS, pp is None or pp <= arch.num_layers),
        )
        return self
