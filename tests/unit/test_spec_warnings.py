"""Warnings about valid specs: a literal env value that looks like a secret."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.service import compute_known_facts
from inferfleet.planning.spec_warnings import compute_model_mismatches, compute_spec_warnings

HINT = (
    "anyone who can read this InferenceService can read it; put it in a Secret and use valueFrom.secretKeyRef"
)


def spec_with_env(*env: dict[str, Any]) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": "m", "source": "hf://org/m", "parametersBillions": 8},
            "engine": {"kind": "vllm", "env": list(env)},
        }
    )


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("HF_TOKEN", "abc", "its name contains TOKEN"),
        ("HUGGING_FACE_HUB_TOKEN", "whatever", "its name contains TOKEN"),
        ("HFTOKEN", "whatever", "its name contains TOKEN"),
        ("OPENAI_API_KEY", "x", "its name contains KEY"),
        ("api-key", "x", "its name contains KEY"),
        ("AWS_SECRET_ACCESS_KEY", "x", "its name contains SECRET"),
        ("DB_PASSWORD", "hunter2", "its name contains PASSWORD"),
        ("GCP_CREDENTIALS", "{}", "its name contains CREDENTIALS"),
        ("EXTRA", "hf_" + "a1B2" * 8, "its value looks like a token"),
        ("EXTRA", "sk-proj-" + "Zx9" * 10, "its value looks like a token"),
        ("EXTRA", "ghp_" + "Q7w" * 12, "its value looks like a token"),
        ("EXTRA", "AKIAIOSFODNN7EXAMPLE", "its value looks like a token"),
        (
            "EXTRA",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "its value looks like a token",
        ),
        ("EXTRA", "dGhpcyBpcyBhIHNlY3JldCBrZXkgb2YgNDggYnl0ZXM=", "its value looks like a token"),
    ],
)
def test_a_literal_secret_is_warned_about_without_echoing_it(name: str, value: str, why: str) -> None:
    [warning] = compute_spec_warnings(
        spec_with_env({"name": "A", "value": "1"}, {"name": name, "value": value})
    )
    assert warning == f"spec.engine.env[1] ({name}) has a literal value and {why}: {HINT}"
    assert value not in warning


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKENIZERS_PARALLELISM", "false"),
        ("VLLM_USE_V1", "1"),
        ("USE_KV_KEY_CACHE", "true"),  # a flag, whatever the name says
        ("MONKEY_PATCH", "yes-please"),
        ("HF_HUB_ENABLE_HF_TRANSFER", "1"),
        ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
        ("MODEL_ID", "meta-llama/Llama-3.1-8B-Instruct"),
        ("CACHE_DIR", "/models/cache/some-long-directory-name-2025"),
        ("NCCL_DEBUG", "INFO"),
        ("HF_TOKEN", ""),
    ],
)
def test_ordinary_settings_are_not_warned_about(name: str, value: str) -> None:
    assert compute_spec_warnings(spec_with_env({"name": name, "value": value})) == []


def test_a_secret_from_value_from_is_not_warned_about() -> None:
    ref = {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert compute_spec_warnings(spec_with_env({"name": "HF_TOKEN", "valueFrom": ref})) == []


def test_each_suspect_variable_gets_its_own_warning() -> None:
    warnings = compute_spec_warnings(
        spec_with_env({"name": "HF_TOKEN", "value": "a"}, {"name": "OPENAI_API_KEY", "value": "b"})
    )
    assert [w.split(" has ")[0] for w in warnings] == [
        "spec.engine.env[0] (HF_TOKEN)",
        "spec.engine.env[1] (OPENAI_API_KEY)",
    ]


# The spec against the model's known facts.
LLAMA_8B_ARCH = {"numLayers": 32, "hiddenSize": 4096, "numAttentionHeads": 32, "numKeyValueHeads": 8}
ORIGIN = "inferfleet's known models (meta-llama/Llama-3.1-8B-Instruct)"


def mismatches(**model: Any) -> list[str]:
    spec = InferenceServiceSpec.model_validate(
        {
            "model": {"name": "m", "source": "hf://meta-llama/Llama-3.1-8B-Instruct", **model},
            "engine": {"kind": "vllm"},
        }
    )
    return compute_model_mismatches(spec, compute_known_facts(spec))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({}, []),
        ({"parametersBillions": 8.03, "architecture": LLAMA_8B_ARCH}, []),
        ({"parametersBillions": 8}, []),  # rounded: within 5%
        ({"parametersBillions": 8.4}, []),
        (
            {"parametersBillions": 8.5},
            [f"spec.model.parametersBillions is 8.5 but {ORIGIN} say 8.03 (8,030,261,248 parameters)"],
        ),
        ({"dtype": "fp8"}, []),  # quantized at load from bf16 weights: engines do that
        ({"dtype": "float32"}, [f"spec.model.dtype is float32 but {ORIGIN} say the weights are bfloat16"]),
        (
            {"architecture": {**LLAMA_8B_ARCH, "numKeyValueHeads": None}},
            [f"spec.model.architecture.numKeyValueHeads is 32 but {ORIGIN} say 8"],
        ),
        (
            {"architecture": {**LLAMA_8B_ARCH, "hiddenSize": 8192, "headDim": 128}},
            [f"spec.model.architecture.hiddenSize is 8192 but {ORIGIN} say 4096"],
        ),
    ],
)
def test_spec_values_that_contradict_the_known_model_name_both_values(
    model: dict[str, Any], expected: list[str]
) -> None:
    assert mismatches(**model) == expected


def test_an_unknown_model_has_nothing_to_contradict() -> None:
    spec = spec_with_env()
    assert compute_model_mismatches(spec, compute_known_facts(spec)) == []
