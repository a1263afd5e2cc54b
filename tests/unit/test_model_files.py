"""A model's shape from its files (config.json, safetensors index and headers), and the table of
well-known models."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from inferfleet.api import Dtype
from inferfleet.planfile import PlanFileError, read_model_dir
from inferfleet.planning.known_models import KNOWN_MODELS, lookup_known_model
from inferfleet.planning.model_files import (
    ModelFacts,
    ModelFileError,
    ModelFiles,
    build_facts_record,
    build_model_facts,
    compute_config_parameters,
    parse_config,
    parse_facts_record,
    parse_safetensors_header,
    parse_safetensors_index,
)
from inferfleet.planning.sizing import Architecture

# meta-llama/Llama-3.1-8B-Instruct's config.json as published (keys sizing ignores included).
LLAMA_8B_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3",
    "use_cache": True,
    "vocab_size": 128256,
}
MIXTRAL_CONFIG = {
    **{k: LLAMA_8B_CONFIG[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads")},
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
DEEPSEEK_V3 = next(m for m in KNOWN_MODELS if m.repo == "deepseek-ai/DeepSeek-V3").config
GEMMA3_27B = next(m for m in KNOWN_MODELS if m.repo == "google/gemma-3-27b-it").config


def without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in keys}


@pytest.mark.parametrize(
    ("config", "dtype", "architecture", "experts"),
    [
        pytest.param(LLAMA_8B_CONFIG, Dtype.BFLOAT16, Architecture(32, 4096, 32, 8), None, id="dense-llama"),
        pytest.param(MIXTRAL_CONFIG, Dtype.BFLOAT16, Architecture(32, 4096, 32, 8), 8, id="moe-mixtral"),
        pytest.param(
            {**without(LLAMA_8B_CONFIG, "torch_dtype"), "dtype": "float16"},
            Dtype.FLOAT16,
            Architecture(32, 4096, 32, 8),
            None,
            id="dtype-key-of-newer-transformers",
        ),
        pytest.param(
            without(LLAMA_8B_CONFIG, "torch_dtype"), None, Architecture(32, 4096, 32, 8), None, id="no-dtype"
        ),
        # Multi-head latent attention: one latent of 512 + 64 per token and layer = one head of 288 (K and V).
        pytest.param(DEEPSEEK_V3, Dtype.FP8, Architecture(61, 7168, 128, 1, 288), 256, id="deepseek-mla-fp8"),
        pytest.param(
            GEMMA3_27B, Dtype.BFLOAT16, Architecture(62, 5376, 32, 16, 128), None, id="multimodal-text-config"
        ),
        pytest.param({"model_type": "llama"}, None, None, None, id="no-shape"),
    ],
)
def test_config_json_gives_architecture_dtype_and_experts(
    config: dict[str, Any], dtype: Dtype | None, architecture: Architecture | None, experts: int | None
) -> None:
    facts = parse_config(config)
    assert (facts.dtype, facts.architecture, facts.experts) == (dtype, architecture, experts)


@pytest.mark.parametrize(
    ("quantization", "dtype"),
    [
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, Dtype.FP8),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, Dtype.INT4),
        ({"quant_method": "awq", "bits": 4, "version": "gemm"}, Dtype.INT4),
        ({"quant_method": "gptq", "bits": 8}, Dtype.INT8),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, Dtype.INT4),
        (
            {"quant_method": "compressed-tensors",
             "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}},
            Dtype.FP8,
        ),
        (
            {"quant_method": "compressed-tensors",
             "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}},
            Dtype.INT4,
        ),
        # An unknown method is unknown: torch_dtype (bfloat16) is the activations', not the weights'.
        ({"quant_method": "mxfp4"}, None),
    ],
)  # fmt: skip
def test_a_quantization_config_says_the_stored_dtype(
    quantization: dict[str, Any], dtype: Dtype | None
) -> None:
    assert parse_config({**LLAMA_8B_CONFIG, "quantization_config": quantization}).dtype == dtype


@pytest.mark.parametrize("model", KNOWN_MODELS, ids=lambda m: m.repo)
def test_every_known_count_is_what_its_config_adds_up_to(model: Any) -> None:
    """The table's counts and config excerpts are typed independently: they must agree exactly."""
    computed = compute_config_parameters(model.config)
    if model.repo == "google/gemma-3-27b-it":
        # compute_config_parameters does not count a vision tower: the language model's own count,
        # plus SigLIP-so400m (416,866,032) and the projector (5376 x 1152 + 1152).
        assert computed is None
        text = {"model_type": "gemma3_text", **model.config["text_config"]}
        assert compute_config_parameters(text) == 27_009_346_304
        assert model.parameters == 27_009_346_304 + 416_866_032 + 5376 * 1152 + 1152
    else:
        assert computed == model.parameters


def test_the_table_gives_exact_facts_of_well_known_models() -> None:
    llama = lookup_known_model("hf://meta-llama/Llama-3.1-8B-Instruct")
    assert llama is not None
    assert (llama.facts.parameters, llama.facts.dtype) == (8_030_261_248, Dtype.BFLOAT16)
    assert llama.facts.architecture == Architecture(32, 4096, 32, 8)
    deepseek = lookup_known_model("hf://deepseek-ai/DeepSeek-R1")
    assert deepseek is not None
    assert deepseek.repo == "deepseek-ai/DeepSeek-V3"
    assert deepseek.facts.dtype == Dtype.FP8


@pytest.mark.parametrize(
    ("source", "name", "repo"),
    [
        ("hf://meta-llama/Llama-3.1-70B-Instruct", "x", "meta-llama/Llama-3.1-70B-Instruct"),
        ("hf://META-LLAMA/llama-3.1-70b-instruct/", "x", "meta-llama/Llama-3.1-70B-Instruct"),
        ("hf://meta-llama/Meta-Llama-3.1-70B", "x", "meta-llama/Llama-3.1-70B-Instruct"),
        ("hf://Qwen/Qwen3-8B@9c925d64", "x", "Qwen/Qwen3-8B"),
        ("s3://models/qwen/Qwen2.5-72B-Instruct/", "x", "Qwen/Qwen2.5-72B-Instruct"),
        ("pvc://weights/mistral/Mixtral-8x7B-Instruct-v0.1", "x", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        ("oci://registry.example/models/gemma-2-9b-it:v1", "x", "google/gemma-2-9b-it"),
        ("s3://bucket/checkpoints/final", "Llama-3.3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct"),
        ("hf://someone/fine-tune-of-llama", "my-llama", None),
        ("hf://org/m", "m", None),
    ],
)
def test_a_model_is_looked_up_by_source_then_served_name(source: str, name: str, repo: str | None) -> None:
    found = lookup_known_model(source, name)
    assert (found.repo if found else None) == repo


def test_the_index_total_size_gives_the_exact_count_of_unquantized_weights() -> None:
    index = {"metadata": {"total_size": 16_060_522_496}, "weight_map": {"lm_head.weight": "a.safetensors"}}
    assert parse_safetensors_index(index) == 16_060_522_496
    facts = build_model_facts(ModelFiles(without(LLAMA_8B_CONFIG, "vocab_size"), index))
    assert facts.parameters == 8_030_261_248  # bf16: 2 bytes each
    fp32 = build_model_facts(ModelFiles({"model_type": "x", "torch_dtype": "float32"}, index))
    assert fp32.parameters == 16_060_522_496 // 4


def test_a_quantized_index_size_is_not_divided_into_a_count() -> None:
    """fp8 weights with bf16 norms and fp32 scales: bytes / 1 would overcount; the config's
    arithmetic gives the served model's count instead."""
    facts = build_model_facts(ModelFiles(DEEPSEEK_V3, {"metadata": {"total_size": 688_586_727_753}}))
    assert facts.parameters == 671_026_419_200


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None
) -> bytes:
    """A safetensors file as the format specifies it: an 8-byte little-endian header length, the
    JSON header (dtype, shape and data offsets of each tensor), then the data."""
    width = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "I64": 8}
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = width[dtype]
        for n in shape:
            size *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def test_a_safetensors_header_counts_every_tensor_by_dtype() -> None:
    raw = safetensors_bytes(
        {
            "model.embed_tokens.weight": ("BF16", [1000, 64]),
            "model.layers.0.mlp.down_proj.weight": ("F8_E4M3", [64, 256]),
            "model.layers.0.mlp.down_proj.weight_scale_inv": ("F32", [1, 2]),
            "model.norm.weight": ("BF16", [64]),
        },
        metadata={"format": "pt"},
    )
    assert parse_safetensors_header(raw) == {"BF16": 64_064, "F8_E4M3": 16_384, "F32": 2}
    # Only the header is needed, not the data.
    header_only = raw[: 8 + struct.unpack("<Q", raw[:8])[0]]
    assert parse_safetensors_header(header_only) == parse_safetensors_header(raw)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\x10\x00", "8-byte header length"),
        (struct.pack("<Q", 50) + b"{}", "header of 50 bytes, 2 available"),
        (struct.pack("<Q", 4) + b"nope", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (safetensors_bytes({"w": ("I64", [2])}).replace(b'"I64"', b'"Q99"'), "unknown dtype 'Q99'"),
        (safetensors_bytes({"w": ("BF16", [4, 4])}).replace(b"[4, 4]", b"[4, 9]"), "32 bytes for 36 BF16"),
    ],
)
def test_a_broken_safetensors_header_is_refused_saying_why(raw: bytes, problem: str) -> None:
    with pytest.raises(ModelFileError, match=problem):
        parse_safetensors_header(raw)


def test_headers_beat_the_index_and_the_config(tmp_path: Path) -> None:
    """What the files hold is counted exactly; a config family the arithmetic does not know still
    gets its count and, without a torch_dtype, the dominant stored dtype."""
    config = {"model_type": "brand-new", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(
        safetensors_bytes({"a": ("BF16", [64, 64]), "b": ("BF16", [64])})
    )
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes({"c": ("BF16", [10, 64])}))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 999}}))
    facts = read_model_dir(tmp_path)
    assert facts.parameters == 64 * 64 + 64 + 640
    assert facts.dtype == Dtype.BFLOAT16
    assert facts.architecture == Architecture(2, 64, 4)
    assert facts.model_type == "brand-new"


def test_a_model_dir_without_config_json_is_an_error_naming_the_dir(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match=f"reading the model in {tmp_path}"):
        read_model_dir(tmp_path)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            {
                "parameters": 8030261248,
                "dtype": "bfloat16",
                "modelType": "llama",
                "architecture": {
                    "num_layers": 32,
                    "hidden_size": 4096,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 8,
                    "head_dim": None,
                },
            },
            ModelFacts(8030261248, Dtype.BFLOAT16, Architecture(32, 4096, 32, 8), "llama"),
            id="whole",
        ),
        pytest.param({"parameters": -1, "dtype": "fp3", "modelType": 7}, None, id="nothing-usable"),
        pytest.param({"parameters": True, "architecture": {"num_layers": 2}}, None, id="bool-and-partial"),
        pytest.param({"parameters": 10, "experts": 0}, ModelFacts(parameters=10), id="bad-field-dropped"),
        pytest.param("not an object", None, id="not-an-object"),
    ],
)
def test_a_fetch_jobs_facts_record_is_read_defensively(record: Any, expected: ModelFacts | None) -> None:
    assert parse_facts_record(record) == expected


def test_the_facts_record_round_trips() -> None:
    facts = ModelFacts(70553706496, Dtype.BFLOAT16, Architecture(80, 8192, 64, 8, 128), "llama", experts=None)
    assert parse_facts_record(build_facts_record(facts)) == facts
