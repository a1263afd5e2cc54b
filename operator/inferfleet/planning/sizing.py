"""Model sizing: how many GPUs one replica needs and how it is split (tensor x pipeline parallel).

Pure arithmetic, no IO. Sizes are GiB (2**30 bytes). For a replica of N = TP x PP GPUs:

    need per GPU = weights / N + kv / (min(TP, kv_heads) x PP) + runtime_overhead_gib
    usable       = gpu_memory_gib x gpu_memory_utilization   (like vLLM's --gpu-memory-utilization)

`kv` is the KV cache for one full `max_model_len` sequence. When TP exceeds the number of KV
heads, vLLM replicates KV heads across ranks, so the cache then shrinks only by the KV head count
(this matters for MLA models like DeepSeek-V3, modelled as one KV head).

`runtime_overhead_gib` (default 6 GiB per GPU) is everything that is neither weights nor KV:
CUDA context and cuBLAS/NCCL workspaces (~1 GiB), the activation peak of a chunked-prefill step
(~1-2 GiB), CUDA graphs (~1-2 GiB) and allocator fragmentation (~1 GiB). It is deliberately at the
high end: with 2-3 GiB, Llama-3.1-70B bf16 "fits" on 2 x H100 with room for a single sequence,
while deployment guides (and anything that must batch requests) use 4.

Auto mode picks the fewest nodes, then the fewest GPUs. Tensor parallelism stays inside a node;
pipeline parallelism grows only once TP is at its largest valid value, so it spans nodes (one pod
per stage) or, when head divisibility caps TP below the node size, splits inside the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inferfleet.api import ReadyReason, ShardPlan
from inferfleet.api.spec import Dtype

GIB = 2**30
DEFAULT_RUNTIME_OVERHEAD_GIB = 6.0
DEFAULT_MAX_NODES = 64


# Bytes per parameter. fp8/int8: per-channel scales are ~0.01%; the extra 2% covers norms, biases
# and other small tensors that quantized checkpoints keep in 16-bit. int4: group-wise with one fp16
# scale per 128 weights (GPTQ/AWQ default) adds 2/128 bytes.
BYTES_PER_PARAM: dict[Dtype, float] = {
    Dtype.FLOAT32: 4.0,
    Dtype.FLOAT16: 2.0,
    Dtype.BFLOAT16: 2.0,
    Dtype.FP8: 1.02,
    Dtype.INT8: 1.02,
    Dtype.INT4: 0.5 + 2 / 128,
}

# Bytes per KV cache element. fp8 models serve with an fp8 KV cache; weight-only int8/int4 models
# still compute attention, and cache K/V, in 16-bit.
KV_BYTES: dict[Dtype, int] = {
    Dtype.FLOAT32: 4,
    Dtype.FLOAT16: 2,
    Dtype.BFLOAT16: 2,
    Dtype.FP8: 1,
    Dtype.INT8: 2,
    Dtype.INT4: 2,
}


class SizingError(ValueError):
    """The model cannot be placed as asked; the message says what is missing, with numbers.

    `reason` is the Ready condition's reason: waiting for bigger or more GPUs.
    """

    reason = ReadyReason.MODEL_DOES_NOT_FIT


class ModelMetadataPendingError(SizingError):
    """The parameter count is neither in the spec nor known from the model's files or the table of
    well-known models: nothing can be sized until one of them says it."""

    reason = ReadyReason.MODEL_METADATA_PENDING


class InvalidShardingError(SizingError):
    """The sharding asked for cannot work on this model on any cluster (heads or layers do not
    divide): the spec must change, no capacity will help."""

    reason = ReadyReason.INVALID_SPEC


@dataclass(frozen=True)
class Architecture:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int | None = None  # None = same as attention heads (no GQA)
    head_dim: int | None = None  # None = hidden_size // num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def effective_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


# Conservative Llama-like shapes with 8 KV heads (GQA), by size: (up to billions, architecture).
# Each is a real model's shape at the top of its bucket, so KV estimates err on the high side.
DEFAULT_ARCHITECTURES: tuple[tuple[float, Architecture], ...] = (
    (4, Architecture(28, 3072, 24, 8)),  # Llama-3.2-3B
    (10, Architecture(32, 4096, 32, 8)),  # Llama-3.1-8B
    (20, Architecture(48, 5120, 40, 8)),  # Qwen2.5-14B
    (40, Architecture(64, 5120, 40, 8)),  # Qwen2.5-32B
    (80, Architecture(80, 8192, 64, 8)),  # Llama-3.1-70B
    (200, Architecture(96, 12288, 96, 8)),  # GPT-3-175B shape with GQA (Mistral-Large-123B: 88 layers)
    (math.inf, Architecture(126, 16384, 128, 8)),  # Llama-3.1-405B
)


@dataclass(frozen=True)
class SizingInput:
    parameters_billions: float
    dtype: Dtype
    max_model_len: int
    gpu_memory_gib: float
    gpus_per_node: int
    architecture: Architecture | None = None  # None -> default_architecture(parameters_billions)
    tensor_parallel: int | None = None  # manual mode when set
    pipeline_parallel: int | None = None  # manual mode only; default 1 when TP is given
    gpu_memory_utilization: float = 0.9
    runtime_overhead_gib: float = DEFAULT_RUNTIME_OVERHEAD_GIB  # per GPU, see module docstring
    max_nodes: int = DEFAULT_MAX_NODES  # auto mode searches replicas of at most this many nodes

    def __post_init__(self) -> None:
        if self.parameters_billions <= 0 or self.max_model_len < 1 or self.gpu_memory_gib <= 0:
            raise SizingError("parameters_billions, max_model_len and gpu_memory_gib must be positive")
        if self.gpus_per_node < 1 or self.max_nodes < 1:
            raise SizingError("gpus_per_node and max_nodes must be at least 1")
        if not 0 < self.gpu_memory_utilization <= 1 or self.runtime_overhead_gib < 0:
            raise SizingError("gpu_memory_utilization must be in (0, 1] and runtime_overhead_gib >= 0")


def compute_weights_gib(parameters_billions: float, dtype: Dtype) -> float:
    return parameters_billions * 1e9 * BYTES_PER_PARAM[dtype] / GIB


def compute_kv_bytes_per_token(arch: Architecture, dtype: Dtype) -> int:
    """K and V, for every layer and KV head."""
    return 2 * arch.num_layers * arch.kv_heads * arch.effective_head_dim * KV_BYTES[dtype]


def default_architecture(parameters_billions: float) -> Architecture:
    return next(arch for limit, arch in DEFAULT_ARCHITECTURES if parameters_billions <= limit)


@dataclass(frozen=True)
class _Model:
    arch: Architecture
    weights_gib: float
    kv_gib: float


def _per_gpu_gib(inp: SizingInput, model: _Model, tp: int, pp: int) -> float:
    kv_shards = min(tp, model.arch.kv_heads) * pp
    return model.weights_gib / (tp * pp) + model.kv_gib / kv_shards + inp.runtime_overhead_gib


def _usable_gib(inp: SizingInput) -> float:
    return inp.gpu_memory_gib * inp.gpu_memory_utilization


def _nodes(inp: SizingInput, tp: int, pp: int) -> int:
    return math.ceil(tp * pp / inp.gpus_per_node)


def _tp_problem(tp: int, arch: Architecture, gpus_per_node: int) -> str | None:
    """What makes `tp` fail on nodes of `gpus_per_node` GPUs, or None; see _tp_invalid."""
    if tp > gpus_per_node:
        return f"tensor_parallel {tp} exceeds gpus_per_node {gpus_per_node} (TP stays inside one node)"
    return _tp_invalid(tp, arch)


def _tp_invalid(tp: int, arch: Architecture) -> str | None:
    """What makes `tp` impossible for this model whatever the GPUs, or None."""
    if tp < 1 or tp & (tp - 1):
        return f"tensor_parallel {tp} is not a power of two"
    if arch.num_attention_heads % tp:
        return f"tensor_parallel {tp} does not divide num_attention_heads {arch.num_attention_heads}"
    if arch.kv_heads % tp and tp % arch.kv_heads:
        return (
            f"tensor_parallel {tp} and num_key_value_heads {arch.kv_heads}: "
            "one must be a multiple of the other"
        )
    return None


def _assumed(inp: SizingInput) -> str:
    """Where the head and layer counts came from, when the spec did not give them."""
    if inp.architecture is not None:
        return ""
    return (
        f" (the architecture assumed for {inp.parameters_billions:g}B parameters; "
        "set model.architecture from the model's config.json)"
    )


def _candidates(inp: SizingInput, arch: Architecture) -> list[tuple[int, int]]:
    """(TP, PP) pairs to try, fewest nodes then fewest GPUs first; PP grows only at the largest TP."""
    tps = [2**i for i in range(inp.gpus_per_node.bit_length())]
    tps = [tp for tp in tps if _tp_problem(tp, arch, inp.gpus_per_node) is None]
    tp_max = tps[-1]  # TP 1 is always valid
    max_pp = min(arch.num_layers, inp.max_nodes * inp.gpus_per_node // tp_max)
    pairs = [(tp, 1) for tp in tps] + [(tp_max, pp) for pp in range(2, max_pp + 1)]
    return sorted(pairs, key=lambda p: (_nodes(inp, *p), p[0] * p[1]))


def _shortfall(inp: SizingInput, model: _Model, tp: int, pp: int) -> str:
    need, usable = _per_gpu_gib(inp, model, tp, pp), _usable_gib(inp)
    return (
        f"TP {tp} x PP {pp} needs {need:.1f} GiB per GPU, have {usable:.1f} GiB usable "
        f"({inp.gpu_memory_gib:g} GiB x {inp.gpu_memory_utilization:g}), short by {need - usable:.1f} GiB: "
        f"weights {model.weights_gib:.1f} GiB + KV cache {model.kv_gib:.1f} GiB "
        f"for {inp.max_model_len} tokens, split over the GPUs, "
        f"+ {inp.runtime_overhead_gib:g} GiB runtime overhead per GPU"
    )


def _manual(inp: SizingInput, model: _Model, tp: int) -> tuple[int, int]:
    pp = 1 if inp.pipeline_parallel is None else inp.pipeline_parallel
    invalid = _tp_invalid(tp, model.arch)
    if invalid is None and not 1 <= pp <= model.arch.num_layers:
        invalid = f"pipeline_parallel {pp} must be between 1 and num_layers {model.arch.num_layers}"
    if invalid:
        raise InvalidShardingError(f"{invalid}{_assumed(inp)}")
    if tp > inp.gpus_per_node:
        raise SizingError(
            f"tensor_parallel {tp} exceeds gpus_per_node {inp.gpus_per_node} (TP stays inside one node)"
        )
    if _per_gpu_gib(inp, model, tp, pp) > _usable_gib(inp):
        raise SizingError(f"does not fit: {_shortfall(inp, model, tp, pp)}")
    return tp, pp


def _auto(inp: SizingInput, model: _Model) -> tuple[int, int]:
    candidates = _candidates(inp, model.arch)
    for tp, pp in candidates:
        if _per_gpu_gib(inp, model, tp, pp) <= _usable_gib(inp):
            return tp, pp
    tp, pp = candidates[-1]
    raise SizingError(
        f"nothing fits within {inp.max_nodes} nodes of {inp.gpus_per_node} GPUs; "
        f"the largest layout, {_shortfall(inp, model, tp, pp)}"
    )


def plan_shards(inp: SizingInput) -> ShardPlan:
    arch = inp.architecture or default_architecture(inp.parameters_billions)
    model = _Model(
        arch,
        compute_weights_gib(inp.parameters_billions, inp.dtype),
        compute_kv_bytes_per_token(arch, inp.dtype) * inp.max_model_len / GIB,
    )
    if inp.tensor_parallel is not None:
        tp, pp = _manual(inp, model, inp.tensor_parallel)
    elif inp.pipeline_parallel is not None:
        raise InvalidShardingError("pipeline_parallel is set without tensor_parallel; set both, or neither")
    else:
        tp, pp = _auto(inp, model)
    total = tp * pp
    multi_pod = total > inp.gpus_per_node  # then one pod per pipeline stage
    return ShardPlan(
        tensor_parallel=tp,
        pipeline_parallel=pp,
        gpus_per_pod=tp if multi_pod else total,
        pods_per_replica=pp if multi_pod else 1,
        total_gpus=total,
        weights_gib=round(model.weights_gib, 1),
        kv_cache_gib=round(model.kv_gib, 1),
        per_gpu_gib=round(_per_gpu_gib(inp, model, tp, pp), 1),
    )
