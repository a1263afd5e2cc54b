"""Well-known open models, for planning without their files (`inferfleet plan`, and the operator
before a model's files are read).

Each entry is an excerpt of the model's config.json on Hugging Face (the keys sizing and the
parameter arithmetic read, copied as published) and its exact parameter count: the count the
Hugging Face model page reads from the safetensors headers, equal to the index's
`metadata.total_size` / 2 for the bf16 checkpoints. tests/unit/test_model_files.py recomputes
every count from its config excerpt (`compute_config_parameters`), so a mistyped number fails there.

A service's model is looked up by its source (hf://ORG/REPO, or the last path component of any
other source), then by its served name, ignoring case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inferfleet.planning.model_files import ModelFacts, parse_config


@dataclass(frozen=True)
class KnownModel:
    repo: str
    """The Hugging Face repository the facts are copied from."""
    config: Mapping[str, Any]
    parameters: int
    aliases: tuple[str, ...] = ()
    """Repositories with the same shape and count (base and instruct variants, re-uploads)."""
    note: str = ""
    facts: ModelFacts = field(init=False, compare=False)

    def __post_init__(self) -> None:
        parsed = parse_config(self.config)
        facts = ModelFacts(
            self.parameters, parsed.dtype, parsed.architecture, parsed.model_type, parsed.experts
        )
        object.__setattr__(self, "facts", facts)


def _llama(layers: int, hidden: int, intermediate: int, heads: int) -> dict[str, Any]:
    return {
        "model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
        "intermediate_size": intermediate, "num_attention_heads": heads, "num_key_value_heads": 8,
        "vocab_size": 128256, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }  # fmt: skip


def _qwen3(layers: int, hidden: int, heads: int, kv: int, **more: Any) -> dict[str, Any]:
    return {
        "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": 128, "vocab_size": 151936,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", **more,
    }  # fmt: skip


def _mistral(model_type: str, vocab: int, **more: Any) -> dict[str, Any]:
    return {
        "model_type": model_type, "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": vocab,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", **more,
    }  # fmt: skip


_MIXTRAL_8X22B = {
    "model_type": "mixtral", "num_hidden_layers": 56, "hidden_size": 6144, "intermediate_size": 16384,
    "num_attention_heads": 48, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
_DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "topk_method": "noaux_tc", "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280, "num_nextn_predict_layers": 1,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]},
}  # fmt: skip
_GEMMA2 = {
    "model_type": "gemma2",
    "vocab_size": 256000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}

_QWEN25_7B = {
    "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944,
    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
_QWEN25_72B = {
    "model_type": "qwen2", "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 29568,
    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
_QWEN3_30B_A3B = _qwen3(
    48, 2048, 32, 4, model_type="qwen3_moe", intermediate_size=6144, moe_intermediate_size=768,
    num_experts=128, num_experts_per_tok=8,
)  # fmt: skip
_QWEN3_235B_A22B = _qwen3(
    94, 4096, 64, 4, model_type="qwen3_moe", intermediate_size=12288, moe_intermediate_size=1536,
    num_experts=128, num_experts_per_tok=8,
)  # fmt: skip
_GEMMA2_9B = {
    **_GEMMA2, "num_hidden_layers": 42, "hidden_size": 3584, "intermediate_size": 14336,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
}  # fmt: skip
_GEMMA2_27B = {
    **_GEMMA2, "num_hidden_layers": 46, "hidden_size": 4608, "intermediate_size": 36864,
    "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
}  # fmt: skip
_GEMMA3_1B = {
    "model_type": "gemma3_text", "num_hidden_layers": 26, "hidden_size": 1152, "intermediate_size": 6912,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}  # fmt: skip
_GEMMA3_27B = {
    "model_type": "gemma3", "torch_dtype": "bfloat16",
    "text_config": {
        "model_type": "gemma3_text", "num_hidden_layers": 62, "hidden_size": 5376, "intermediate_size": 21504,
        "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 262208,
        "tie_word_embeddings": True,
    },
}  # fmt: skip
_LLAMA = "meta-llama/Llama-3.1-"
_META_LLAMA = "meta-llama/Meta-Llama-3.1-"

KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        f"{_LLAMA}8B-Instruct", _llama(32, 4096, 14336, 32), 8_030_261_248,
        (f"{_LLAMA}8B", f"{_META_LLAMA}8B-Instruct", f"{_META_LLAMA}8B"),
    ),
    KnownModel(
        f"{_LLAMA}70B-Instruct", _llama(80, 8192, 28672, 64), 70_553_706_496,
        (f"{_LLAMA}70B", f"{_META_LLAMA}70B-Instruct", f"{_META_LLAMA}70B"),
    ),
    KnownModel(
        f"{_LLAMA}405B-Instruct", _llama(126, 16384, 53248, 128), 405_853_388_800,
        (f"{_LLAMA}405B", f"{_META_LLAMA}405B-Instruct", f"{_META_LLAMA}405B"),
    ),
    KnownModel("meta-llama/Llama-3.3-70B-Instruct", _llama(80, 8192, 28672, 64), 70_553_706_496),
    KnownModel("Qwen/Qwen2.5-7B-Instruct", _QWEN25_7B, 7_615_616_512, ("Qwen/Qwen2.5-7B",)),
    KnownModel("Qwen/Qwen2.5-72B-Instruct", _QWEN25_72B, 72_706_203_648, ("Qwen/Qwen2.5-72B",)),
    KnownModel(
        "Qwen/Qwen3-8B", _qwen3(36, 4096, 32, 8, model_type="qwen3", intermediate_size=12288),
        8_190_735_360, ("Qwen/Qwen3-8B-Base",),
    ),
    KnownModel(
        "Qwen/Qwen3-32B", _qwen3(64, 5120, 64, 8, model_type="qwen3", intermediate_size=25600), 32_762_123_264
    ),
    KnownModel("Qwen/Qwen3-30B-A3B", _QWEN3_30B_A3B, 30_532_122_624, ("Qwen/Qwen3-30B-A3B-Base",)),
    KnownModel("Qwen/Qwen3-235B-A22B", _QWEN3_235B_A22B, 235_093_634_560),
    KnownModel(
        "mistralai/Mistral-7B-Instruct-v0.3", _mistral("mistral", 32768), 7_248_023_552,
        ("mistralai/Mistral-7B-v0.3",),
    ),
    KnownModel(
        "mistralai/Mistral-7B-v0.1", _mistral("mistral", 32000), 7_241_732_096,
        ("mistralai/Mistral-7B-Instruct-v0.1", "mistralai/Mistral-7B-Instruct-v0.2"),
    ),
    KnownModel(
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        _mistral("mixtral", 32000, num_local_experts=8, num_experts_per_tok=2), 46_702_792_704,
        ("mistralai/Mixtral-8x7B-v0.1",),
    ),
    KnownModel(
        "mistralai/Mixtral-8x22B-Instruct-v0.1", {**_MIXTRAL_8X22B, "vocab_size": 32768}, 140_630_071_296
    ),
    KnownModel("mistralai/Mixtral-8x22B-v0.1", {**_MIXTRAL_8X22B, "vocab_size": 32000}, 140_620_634_112),
    KnownModel(
        "deepseek-ai/DeepSeek-V3", _DEEPSEEK_V3, 671_026_419_200,
        ("deepseek-ai/DeepSeek-V3-0324", "deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-0528"),
        note="the served model; the repository also holds a 14B multi-token-prediction layer (685B on "
        "the model page) that engines load only for speculative decoding",
    ),
    KnownModel("google/gemma-2-9b-it", _GEMMA2_9B, 9_241_705_984, ("google/gemma-2-9b",)),
    KnownModel("google/gemma-2-27b-it", _GEMMA2_27B, 27_227_128_320, ("google/gemma-2-27b",)),
    KnownModel("google/gemma-3-1b-it", _GEMMA3_1B, 999_885_952, ("google/gemma-3-1b-pt",)),
    KnownModel(
        "google/gemma-3-27b-it", _GEMMA3_27B, 27_432_406_640, ("google/gemma-3-27b-pt",),
        note="the language model (27,009,346,304) with its SigLIP vision tower and projector",
    ),
)  # fmt: skip

_BY_REPO = {name.lower(): m for m in KNOWN_MODELS for name in (m.repo, *m.aliases)}
_BY_NAME = {name.lower().rsplit("/", 1)[-1]: m for m in KNOWN_MODELS for name in (m.repo, *m.aliases)}


def _source_key(source: str) -> tuple[str, str]:
    """(ORG/REPO of an hf:// source or "", the last path component without a tag or revision)."""
    scheme, _, path = source.partition("://")
    path = path.split("@", 1)[0].strip("/").lower()
    last = path.rsplit("/", 1)[-1]
    if scheme == "oci" and ":" in last:
        last = last.rsplit(":", 1)[0]
    return (path if scheme == "hf" else ""), last


def lookup_known_model(source: str, name: str = "") -> KnownModel | None:
    """The table's entry for a model's source, else for its served name; None if neither is known."""
    repo, last = _source_key(source)
    return _BY_REPO.get(repo) or _BY_NAME.get(last) or _BY_NAME.get(name.lower())
