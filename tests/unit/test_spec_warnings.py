"""Warnings about valid specs: a literal env value that looks like a secret."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.spec_warnings import compute_spec_warnings

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
