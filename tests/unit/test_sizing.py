"""Sizing against public deployment guides (vLLM recipes, NVIDIA NIM profiles, cloud tutorials).

GPU memory is what nvidia-smi reports where it differs from the marketing figure: L4 23034 MiB,
H200 139.8 GiB. Runtime overhead is the module default (6 GiB per GPU).
"""

from __future__ import annotations

import dataclasses

import pytest

from inferfleet.planning.sizing import (
    Architecture,
    Dtype,
    InvalidShardingError,
    SizingError,
    SizingInput,
    compute_kv_bytes_per_token,
    compute_weights_gib,
    default_architecture,
    plan_shards,
)

# Real architectures from the models' config.json.
LLAMA_8B = Architecture(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8)
LLAMA_70B = Architecture(num_layers=80, hidden_size=8192, num_attention_heads=64, num_key_value_heads=8)
LLAMA_405B = Architecture(num_layers=126, hidden_size=16384, num_attention_heads=128, num_key_value_heads=8)
MIXTRAL = Architecture(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8)
# MLA caches one 576-wide latent (512 + 64 RoPE) per layer; modelled as one KV head of dim 576.
DEEPSEEK_V3 = Architecture(
    num_layers=61, hidden_size=7168, num_attention_heads=128, num_key_value_heads=1, head_dim=576
)
# 28 heads: TP 8 does not divide them, so TP is capped at 4.
QWEN_7B = Architecture(num_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4)

# (gpu_memory_gib, gpus_per_node)
H100 = (80.0, 8)
H200 = (139.8, 8)
A100_40 = (40.0, 8)
L4 = (22.5, 4)

BF16, FP8, INT4, FP32 = Dtype.BFLOAT16, Dtype.FP8, Dtype.INT4, Dtype.FLOAT32


def _input(
    params: float, dtype: Dtype, arch: Architecture | None, gpu: tuple[float, int], tokens: int = 8192
) -> SizingInput:
    return SizingInput(
        parameters_billions=params,
        dtype=dtype,
        max_model_len=tokens,
        gpu_memory_gib=gpu[0],
        gpus_per_node=gpu[1],
        architecture=arch,
    )


@pytest.mark.parametrize(
    ("inp", "tp", "pp", "gpus_per_pod", "pods", "per_gpu_gib"),
    [
        pytest.param(_input(8.03, BF16, LLAMA_8B, H100), 1, 1, 1, 1, 22.0, id="llama-8b-bf16-h100"),
        # 16 GiB of weights + KV + 6 GiB overhead exceed 20.25 usable: 2 L4s (guides use 1 or 2).
        pytest.param(_input(8.03, BF16, LLAMA_8B, L4), 2, 1, 2, 1, 14.0, id="llama-8b-bf16-l4"),
        pytest.param(_input(8.03, BF16, LLAMA_8B, A100_40), 1, 1, 1, 1, 22.0, id="llama-8b-bf16-a100-40"),
        pytest.param(_input(70.6, BF16, LLAMA_70B, H100), 4, 1, 4, 1, 39.5, id="llama-70b-bf16-h100"),
        pytest.param(_input(70.6, BF16, LLAMA_70B, A100_40), 8, 1, 8, 1, 22.8, id="llama-70b-bf16-a100-40"),
        # 67.1 GiB of fp8 weights leave no room on one H100 once the overhead is counted.
        pytest.param(_input(70.6, FP8, LLAMA_70B, H100), 2, 1, 2, 1, 40.2, id="llama-70b-fp8-h100"),
        pytest.param(_input(70.6, INT4, LLAMA_70B, L4), 4, 1, 4, 1, 15.1, id="llama-70b-int4-l4"),
        pytest.param(_input(46.7, BF16, MIXTRAL, H100), 2, 1, 2, 1, 50.0, id="mixtral-8x7b-bf16-h100"),
        pytest.param(_input(405.9, BF16, LLAMA_405B, H100), 8, 2, 8, 2, 53.5, id="llama-405b-bf16-h100"),
        pytest.param(_input(405.9, FP8, LLAMA_405B, H100), 8, 1, 8, 1, 54.4, id="llama-405b-fp8-h100"),
        pytest.param(_input(405.9, BF16, LLAMA_405B, H200), 8, 1, 8, 1, 101.0, id="llama-405b-bf16-h200"),
        pytest.param(_input(671, FP8, DEEPSEEK_V3, H100), 8, 2, 8, 2, 46.1, id="deepseek-v3-fp8-h100"),
        pytest.param(_input(671, FP8, DEEPSEEK_V3, H200), 8, 1, 8, 1, 86.2, id="deepseek-v3-fp8-h200"),
        # TP capped at 4 by the heads: pipeline stages split inside the node, one pod of 8 GPUs...
        pytest.param(
            _input(7.62, FP32, QWEN_7B, (15.0, 8), 32768), 4, 2, 8, 1, 10.0, id="heads-cap-tp-pp-in-node"
        ),
        # ...or, past the node, one pod per stage (3 pods of 4 GPUs on 2 nodes).
        pytest.param(
            _input(7.62, FP32, QWEN_7B, (10.0, 8), 32768), 4, 3, 4, 3, 8.7, id="heads-cap-tp-pp-pods"
        ),
    ],
)
def test_auto_mode_matches_deployment_guides(
    inp: SizingInput, tp: int, pp: int, gpus_per_pod: int, pods: int, per_gpu_gib: float
) -> None:
    plan = plan_shards(inp)
    assert (plan.tensor_parallel, plan.pipeline_parallel, plan.gpus_per_pod, plan.pods_per_replica) == (
        tp,
        pp,
        gpus_per_pod,
        pods,
    )
    assert plan.total_gpus == tp * pp
    assert plan.layout == f"{tp}x{pp}"
    assert plan.per_gpu_gib == per_gpu_gib
    assert plan.per_gpu_gib <= inp.gpu_memory_gib * inp.gpu_memory_utilization


def test_plan_reports_whole_model_sizes_rounded() -> None:
    plan = plan_shards(_input(70.6, BF16, LLAMA_70B, H100))
    assert (plan.weights_gib, plan.kv_cache_gib, plan.per_gpu_gib) == (131.5, 2.5, 39.5)


def test_missing_architecture_uses_the_size_bucket_default() -> None:
    assert plan_shards(_input(70.6, BF16, None, H100)) == plan_shards(_input(70.6, BF16, LLAMA_70B, H100))


@pytest.mark.parametrize(
    ("tp", "pp", "gpus_per_pod", "pods"),
    [
        pytest.param(4, None, 4, 1, id="tp4"),
        pytest.param(4, 2, 8, 1, id="tp4-pp2-one-node"),
        pytest.param(8, 2, 8, 2, id="tp8-pp2-two-nodes"),
    ],
)
def test_manual_mode_takes_the_layout_as_given(tp: int, pp: int | None, gpus_per_pod: int, pods: int) -> None:
    inp = dataclasses.replace(_input(70.6, BF16, LLAMA_70B, H100), tensor_parallel=tp, pipeline_parallel=pp)
    plan = plan_shards(inp)
    assert (plan.tensor_parallel, plan.pipeline_parallel) == (tp, pp or 1)
    assert (plan.gpus_per_pod, plan.pods_per_replica) == (gpus_per_pod, pods)


@pytest.mark.parametrize(
    ("inp", "reason", "message"),
    [
        pytest.param(
            dataclasses.replace(_input(70.6, BF16, LLAMA_70B, H100), tensor_parallel=2),
            "ModelDoesNotFit",
            "needs 73.0 GiB per GPU, have 72.0 GiB usable",
            id="70b-tp2-does-not-fit",
        ),
        pytest.param(
            dataclasses.replace(_input(70.6, BF16, LLAMA_70B, H100), tensor_parallel=3),
            "InvalidSpec",
            "power of two",
            id="tp3",
        ),
        pytest.param(
            dataclasses.replace(_input(70.6, BF16, LLAMA_70B, H100), tensor_parallel=16),
            "ModelDoesNotFit",
            "exceeds gpus_per_node 8",
            id="tp16-on-8-gpu-nodes",
        ),
        pytest.param(
            dataclasses.replace(_input(7.62, BF16, QWEN_7B, H100), tensor_parallel=8),
            "InvalidSpec",
            "does not divide num_attention_heads 28",
            id="tp-does-not-divide-heads",
        ),
        pytest.param(
            dataclasses.replace(
                _input(2, BF16, Architecture(24, 2304, 12, 6), H100),  # hypothetical: 6 KV heads
                tensor_parallel=4,
            ),
            "InvalidSpec",
            "num_key_value_heads 6",
            id="tp-and-kv-heads-incompatible",
        ),
        pytest.param(
            dataclasses.replace(_input(70.6, BF16, LLAMA_70B, H100), tensor_parallel=8, pipeline_parallel=81),
            "InvalidSpec",
            "num_layers 80",
            id="pp-beyond-layers",
        ),
        pytest.param(
            dataclasses.replace(_input(70.6, BF16, LLAMA_70B, H100), pipeline_parallel=2),
            "InvalidSpec",
            "without tensor_parallel",
            id="pp-without-tp",
        ),
    ],
)
def test_manual_mode_refusals_say_why(inp: SizingInput, reason: str, message: str) -> None:
    """InvalidSpec: no cluster can run it; ModelDoesNotFit: bigger or more GPUs would."""
    with pytest.raises(SizingError, match=message) as info:
        plan_shards(inp)
    assert info.value.reason == reason


def test_tp_8_on_a_12_head_model_is_an_invalid_spec_even_on_4_gpu_nodes() -> None:
    arch = Architecture(num_layers=12, hidden_size=768, num_attention_heads=12)
    inp = dataclasses.replace(_input(0.1, BF16, arch, L4), tensor_parallel=8)
    with pytest.raises(InvalidShardingError) as info:
        plan_shards(inp)
    assert (info.value.reason, str(info.value)) == (
        "InvalidSpec",
        "tensor_parallel 8 does not divide num_attention_heads 12",
    )


def test_an_invalid_tp_on_the_assumed_architecture_says_to_set_the_architecture() -> None:
    inp = dataclasses.replace(_input(3, BF16, None, H100), tensor_parallel=16)  # assumed: 24 heads
    with pytest.raises(InvalidShardingError) as info:
        plan_shards(inp)
    assert str(info.value) == (
        "tensor_parallel 16 does not divide num_attention_heads 24 (the architecture assumed for 3B "
        "parameters; set model.architecture from the model's config.json)"
    )


@pytest.mark.parametrize(
    ("inp", "message"),
    [
        pytest.param(
            dataclasses.replace(_input(405.9, FP32, LLAMA_405B, L4), max_nodes=4),
            r"nothing fits within 4 nodes of 4 GPUs; the largest layout, TP 4 x PP 4 needs 101\.0 GiB "
            r"per GPU, have 20\.2 GiB usable .*short by 80\.7 GiB: weights 1512\.1 GiB",
            id="405b-fp32-on-4-l4-nodes",
        ),
        pytest.param(
            _input(8.03, BF16, LLAMA_8B, (4.0, 8)),
            r"have 3\.6 GiB usable .*\+ 6 GiB runtime overhead per GPU",
            id="gpu-smaller-than-overhead",
        ),
    ],
)
def test_nothing_fits_reports_the_shortfall(inp: SizingInput, message: str) -> None:
    with pytest.raises(SizingError, match=message):
        plan_shards(inp)


@pytest.mark.parametrize(
    ("params", "dtype", "gib"),
    [
        pytest.param(8.03, BF16, 14.957040548, id="8b-bf16"),
        pytest.param(70.6, INT4, 33.903052099, id="70b-int4-group128"),
        pytest.param(405.9, FP8, 385.584309697, id="405b-fp8"),
        pytest.param(1, FP32, 3.725290298, id="1b-fp32"),
    ],
)
def test_compute_weights_gib(params: float, dtype: Dtype, gib: float) -> None:
    assert compute_weights_gib(params, dtype) == pytest.approx(gib)


@pytest.mark.parametrize(
    ("arch", "dtype", "bytes_per_token"),
    [
        pytest.param(LLAMA_8B, BF16, 131072, id="llama-8b-bf16"),
        pytest.param(LLAMA_8B, FP32, 262144, id="llama-8b-fp32"),
        pytest.param(LLAMA_70B, INT4, 327680, id="llama-70b-int4-has-16bit-kv"),
        pytest.param(LLAMA_405B, FP8, 258048, id="llama-405b-fp8-kv"),
        pytest.param(DEEPSEEK_V3, FP8, 70272, id="deepseek-v3-mla"),
        pytest.param(Architecture(40, 5120, 40), Dtype.FLOAT16, 819200, id="no-gqa-llama-2-13b"),
    ],
)
def test_compute_kv_bytes_per_token(arch: Architecture, dtype: Dtype, bytes_per_token: int) -> None:
    assert compute_kv_bytes_per_token(arch, dtype) == bytes_per_token


@pytest.mark.parametrize(
    ("params", "layers", "hidden"),
    [
        pytest.param(3.2, 28, 3072, id="3b"),
        pytest.param(8.03, 32, 4096, id="8b"),
        pytest.param(14.7, 48, 5120, id="14b"),
        pytest.param(32.8, 64, 5120, id="32b"),
        pytest.param(80, 80, 8192, id="80b-bucket-edge"),
        pytest.param(123, 96, 12288, id="123b"),
        pytest.param(1000, 126, 16384, id="1t"),
    ],
)
def test_default_architecture_by_size(params: float, layers: int, hidden: int) -> None:
    arch = default_architecture(params)
    assert (arch.num_layers, arch.hidden_size, arch.kv_heads) == (layers, hidden, 8)


def test_invalid_input_is_refused() -> None:
    with pytest.raises(SizingError, match="gpu_memory_utilization"):
        dataclasses.replace(_input(8.03, BF16, LLAMA_8B, H100), gpu_memory_utilization=1.5)
