"""A model's shape from its own files: config.json, the safetensors index and safetensors headers.

Pure parsing of what the files hold (already read into dicts and bytes) into `ModelFacts`: the
architecture sizing uses, the dtype of the stored weights and the exact parameter count. The
count comes, in order of trust, from the safetensors headers (every tensor's shape), the index's
`metadata.total_size` divided by the bytes of an unquantized dtype, or the layer arithmetic of a
known config.json family (`compute_config_parameters`).

Multi-head latent attention (DeepSeek-V2/V3) caches one latent of `kv_lora_rank +
qk_rope_head_dim` elements per token and layer; sizing counts K and V, so it becomes one KV head
of half that size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferfleet.api import ModelFactsSource
from inferfleet.api.spec import Dtype
from inferfleet.planning.sizing import Architecture

MAX_HEADER_BYTES = 100 * 2**20
"""The safetensors format's own bound on a header (the Rust reader refuses larger ones)."""

TORCH_DTYPES: Mapping[str, Dtype] = {
    "float32": Dtype.FLOAT32,
    "float": Dtype.FLOAT32,
    "float16": Dtype.FLOAT16,
    "half": Dtype.FLOAT16,
    "bfloat16": Dtype.BFLOAT16,
}
# safetensors dtype -> bytes per element, and what the weights are when that dtype dominates.
SAFETENSORS_BYTES: Mapping[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
SAFETENSORS_DTYPES: Mapping[str, Dtype] = {
    "F32": Dtype.FLOAT32,
    "F16": Dtype.FLOAT16,
    "BF16": Dtype.BFLOAT16,
    "F8_E4M3": Dtype.FP8,
    "F8_E5M2": Dtype.FP8,
    "I8": Dtype.INT8,
}
# Exact bytes per parameter of unquantized checkpoints (total_size / this = parameters).
UNQUANTIZED_BYTES: Mapping[Dtype, int] = {Dtype.FLOAT32: 4, Dtype.FLOAT16: 2, Dtype.BFLOAT16: 2}


class ModelFileError(ValueError):
    """A file that is not what its name says (a truncated or foreign safetensors header)."""


@dataclass(frozen=True)
class ModelFacts:
    """What is known about a model; None where nothing says."""

    parameters: int | None = None
    dtype: Dtype | None = None
    architecture: Architecture | None = None
    model_type: str | None = None
    experts: int | None = None
    """Routed experts of a mixture-of-experts model."""


@dataclass(frozen=True)
class KnownFacts:
    """A model's facts and where they come from (its files, or the table of well-known models)."""

    source: ModelFactsSource
    facts: ModelFacts
    reference: str | None = None
    """The table entry's repository (source KnownModels)."""

    @property
    def origin(self) -> str:
        """Where the facts come from, as a message says it."""
        if self.source == ModelFactsSource.FILES:
            return "the model's files"
        return f"inferfleet's known models ({self.reference})"


@dataclass(frozen=True)
class MetadataFetch:
    """Where reading a model's facts from its files without its weights stands (the operator's
    metadata Job, with the node weights cache on), for the message of a service that waits."""

    job: str | None = None
    """The Job reading them; None: none yet (it is being created)."""
    attempt: int = 1
    error: str | None = None
    """Why the latest attempt failed (the fetch's JSON error); None while it runs, or once done."""
    retry: str | None = None
    """After a failure: when the next attempt starts, or why none will."""
    done: bool = False
    """The Job read the files (their facts, if any, are the model's facts now)."""


@dataclass(frozen=True)
class ModelFiles:
    """The parsed files of one model: what `build_model_facts` reads."""

    config: Mapping[str, Any]
    index: Mapping[str, Any] | None = None
    """model.safetensors.index.json, when the weights are sharded."""
    tensors: Sequence[Mapping[str, int]] = ()
    """Per safetensors file, elements by dtype (`parse_safetensors_header`)."""


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part of a config: a multimodal model nests it in `text_config`."""
    nested = config.get("text_config")
    if isinstance(nested, Mapping) and "num_hidden_layers" not in config:
        return {"model_type": config.get("model_type"), **nested}
    return config


def _int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def parse_architecture(config: Mapping[str, Any]) -> Architecture | None:
    text = text_config(config)
    layers, hidden = _int(text, "num_hidden_layers", "n_layer"), _int(text, "hidden_size", "n_embd")
    heads = _int(text, "num_attention_heads", "n_head")
    if layers is None or hidden is None or heads is None:
        return None
    latent = _int(text, "kv_lora_rank")
    if latent is not None:
        return Architecture(
            layers, hidden, heads, 1, math.ceil((latent + (_int(text, "qk_rope_head_dim") or 0)) / 2)
        )
    return Architecture(layers, hidden, heads, _int(text, "num_key_value_heads"), _int(text, "head_dim"))


def _quantized_dtype(quant: Mapping[str, Any]) -> Dtype | None:
    method = str(quant.get("quant_method", "")).lower()
    if method == "fp8":
        return Dtype.FP8
    if method in ("gptq", "awq"):
        return {4: Dtype.INT4, 8: Dtype.INT8}.get(quant.get("bits", 0))
    if method == "bitsandbytes":
        return Dtype.INT4 if quant.get("load_in_4bit") else Dtype.INT8 if quant.get("load_in_8bit") else None
    if method == "compressed-tensors":
        for group in (quant.get("config_groups") or {}).values():
            weights = group.get("weights") or {} if isinstance(group, Mapping) else {}
            bits, kind = weights.get("num_bits"), weights.get("type")
            if bits == 8:
                return Dtype.FP8 if kind == "float" else Dtype.INT8
            if bits == 4 and kind == "int":
                return Dtype.INT4
    return None


def parse_dtype(config: Mapping[str, Any]) -> Dtype | None:
    """The stored weights' dtype: a quantization method's, else torch_dtype (`dtype` in newer
    transformers). An unknown quantization method is unknown, never guessed from torch_dtype."""
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        return _quantized_dtype(quant)
    for where in (config, text_config(config)):
        name = where.get("torch_dtype") or where.get("dtype")
        if isinstance(name, str) and name.removeprefix("torch.") in TORCH_DTYPES:
            return TORCH_DTYPES[name.removeprefix("torch.")]
    return None


def parse_config(config: Mapping[str, Any]) -> ModelFacts:
    text = text_config(config)
    return ModelFacts(
        parameters=compute_config_parameters(config),
        dtype=parse_dtype(config),
        architecture=parse_architecture(config),
        model_type=str(config["model_type"]) if config.get("model_type") else None,
        experts=_int(text, "num_local_experts", "num_experts", "n_routed_experts"),
    )


def parse_safetensors_index(index: Mapping[str, Any]) -> int | None:
    """Bytes of all weights (`metadata.total_size`), or None."""
    metadata = index.get("metadata")
    return _int(metadata, "total_size") if isinstance(metadata, Mapping) else None


def parse_safetensors_header(raw: bytes) -> dict[str, int]:
    """Elements by dtype of one safetensors file, from its first bytes: an 8-byte little-endian
    header length, then that many bytes of JSON naming every tensor's dtype and shape."""
    if len(raw) < 8:
        raise ModelFileError(f"a safetensors file starts with an 8-byte header length; got {len(raw)} bytes")
    size = int.from_bytes(raw[:8], "little")
    if size > MAX_HEADER_BYTES or len(raw) < 8 + size:
        raise ModelFileError(f"safetensors header of {size} bytes, {len(raw) - 8} available")
    try:
        header = json.loads(raw[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"safetensors header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ModelFileError("safetensors header is not a JSON object")
    elements: dict[str, int] = {}
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        dtype = tensor.get("dtype") if isinstance(tensor, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ModelFileError(f"tensor {name!r} has no valid shape")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_BYTES:
            raise ModelFileError(f"tensor {name!r} has unknown dtype {dtype!r}")
        offsets = tensor.get("data_offsets")
        count = math.prod(shape)
        if (
            isinstance(offsets, list)
            and len(offsets) == 2
            and offsets[1] - offsets[0] != count * SAFETENSORS_BYTES[dtype]
        ):
            raise ModelFileError(
                f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for {count} {dtype} elements"
            )
        elements[dtype] = elements.get(dtype, 0) + count
    return elements


def _tensor_facts(tensors: Sequence[Mapping[str, int]]) -> tuple[int | None, Dtype | None]:
    totals: dict[str, int] = {}
    for per_file in tensors:
        for dtype, count in per_file.items():
            totals[dtype] = totals.get(dtype, 0) + count
    if not totals:
        return None, None
    by_bytes = max(totals, key=lambda d: totals[d] * SAFETENSORS_BYTES.get(d, 1))
    return sum(totals.values()) or None, SAFETENSORS_DTYPES.get(by_bytes)


def build_model_facts(files: ModelFiles) -> ModelFacts:
    """The facts of a model's files; where the operator will read fetched models, and
    `inferfleet plan --model-dir` reads a local one."""
    facts = parse_config(files.config)
    counted, stored_dtype = _tensor_facts(files.tensors)
    dtype = facts.dtype or stored_dtype
    total_size = parse_safetensors_index(files.index) if files.index else None
    from_size = None
    if (
        total_size is not None
        and dtype is not None
        and dtype in UNQUANTIZED_BYTES
        and files.config.get("quantization_config") is None
    ):
        from_size = total_size // UNQUANTIZED_BYTES[dtype]
    parameters = counted or from_size or facts.parameters
    return ModelFacts(parameters, dtype, facts.architecture, facts.model_type, facts.experts)


# Layer arithmetic of config.json families: (q/k/v bias, q/k norms, norms per layer, tied default).
@dataclass(frozen=True)
class _Family:
    qkv_bias: bool = False
    qk_norm: bool = False
    norms: int = 2
    tied: bool = False


FAMILIES: Mapping[str, _Family] = {
    "llama": _Family(),
    "mistral": _Family(),
    "mixtral": _Family(),
    "qwen2": _Family(qkv_bias=True),
    "qwen2_moe": _Family(qkv_bias=True),
    "qwen3": _Family(qk_norm=True),
    "qwen3_moe": _Family(qk_norm=True),
    "gemma2": _Family(norms=4, tied=True),
    "gemma3_text": _Family(qk_norm=True, norms=4, tied=True),
    "deepseek_v3": _Family(),
}


def _attention(c: Mapping[str, Any], family: _Family) -> int:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    if c.get("kv_lora_rank"):  # multi-head latent attention
        rope, nope, v = c["qk_rope_head_dim"], c["qk_nope_head_dim"], c["v_head_dim"]
        latent, q_rank = c["kv_lora_rank"], c.get("q_lora_rank")
        q = h * q_rank + q_rank + q_rank * heads * (nope + rope) if q_rank else h * heads * (nope + rope)
        return int(q + h * (latent + rope) + latent + latent * heads * (nope + v) + heads * v * h)
    kv, d = c.get("num_key_value_heads") or heads, c.get("head_dim") or h // heads
    n = 2 * h * heads * d + 2 * h * kv * d
    if family.qkv_bias or c.get("attention_bias"):
        n += heads * d + 2 * kv * d + (h if c.get("attention_bias") else 0)
    return int(n + (2 * d if family.qk_norm else 0))


def _mlp(c: Mapping[str, Any], layer: int) -> int:
    h = c["hidden_size"]
    experts = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts")
    if not experts or layer < c.get("first_k_dense_replace", 0):
        return int(3 * h * c["intermediate_size"])
    size = c.get("moe_intermediate_size") or c["intermediate_size"]
    shared = c.get("n_shared_experts") or 0
    bias = experts if c.get("topk_method") == "noaux_tc" else 0  # e_score_correction_bias
    return int((experts + shared) * 3 * h * size + h * experts + bias)


def compute_config_parameters(config: Mapping[str, Any]) -> int | None:
    """Parameters of the served model from config.json alone, for the families in FAMILIES (None
    for others, and for multimodal models, whose vision tower this does not count). DeepSeek's
    multi-token-prediction layers are not served by default and not counted."""
    family = FAMILIES.get(str(config.get("model_type")))
    if family is None:
        return None
    try:
        h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        per_norms = family.norms * h
        body = sum(_attention(config, family) + _mlp(config, i) + per_norms for i in range(layers))
    except (KeyError, TypeError):
        return None
    tied = config.get("tie_word_embeddings", family.tied)
    return int(body + vocab * h * (1 if tied else 2) + h)


_ARCHITECTURE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")


def build_facts_record(facts: ModelFacts) -> dict[str, Any]:
    """The facts as a small JSON object: a fetch Job's termination message carries it to the
    operator (at most 4 KiB there, so the facts, not the files)."""
    arch = facts.architecture
    record: dict[str, Any] = {
        "parameters": facts.parameters,
        "dtype": facts.dtype.value if facts.dtype else None,
        "modelType": facts.model_type,
        "experts": facts.experts,
        "architecture": None if arch is None else {k: getattr(arch, k) for k in _ARCHITECTURE_KEYS},
    }
    return {k: v for k, v in record.items() if v is not None}


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_facts_record(raw: Any) -> ModelFacts | None:
    """`build_facts_record`'s inverse; None when nothing usable is there. The record comes from a
    pod's termination message, so every field is checked and a bad one is dropped, never raised."""
    if not isinstance(raw, Mapping):
        return None
    arch_raw = raw.get("architecture")
    arch = None
    if isinstance(arch_raw, Mapping):
        values = {k: _positive(arch_raw.get(k)) for k in _ARCHITECTURE_KEYS}
        if all(values[k] for k in _ARCHITECTURE_KEYS[:3]):
            arch = Architecture(**values)  # type: ignore[arg-type]
    dtype = raw.get("dtype")
    facts = ModelFacts(
        parameters=_positive(raw.get("parameters")),
        dtype=Dtype(dtype) if dtype in {d.value for d in Dtype} else None,
        architecture=arch,
        model_type=raw["modelType"] if isinstance(raw.get("modelType"), str) else None,
        experts=_positive(raw.get("experts")),
    )
    return None if facts == ModelFacts() else facts
