"""Warnings about a valid spec: things that work but should not be done (a Warning Event each),
and where the spec contradicts what the model's files (or the table of known models) say.

Never echo a suspect env value itself: the warning goes into Events that more people can read.
"""

from __future__ import annotations

import re

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.model_files import KnownFacts
from inferfleet.planning.sizing import BYTES_PER_PARAM, Architecture

PARAMETER_TOLERANCE = 0.05
"""A spec's parametersBillions within 5% of the exact count agrees (8.03 for 8,030,261,248, or a
rounded 8); beyond it, it is reported."""

# Words of a variable name that say it holds a credential (HF_TOKEN, OPENAI_API_KEY, DB_PASSWORD).
SECRET_NAME_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "APIKEY", "CREDENTIALS")
# Values shaped like well-known credentials, or like long random keys.
SECRET_VALUE_PATTERNS = (
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"sk-[A-Za-z0-9_-]{20,}"),  # OpenAI, Anthropic and their clones
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"[0-9a-fA-F]{32,}"),  # hex
)
_FLAG_OR_NUMBER = re.compile(r"(?i)true|false|yes|no|on|off|[0-9.]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


def _looks_random(value: str) -> bool:
    """A long base64 string mixing upper case, lower case and digits: a key, not a word or path."""
    return (
        _BASE64.fullmatch(value) is not None
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


def _name_word(name: str) -> str | None:
    """The credential word of `name`, a whole word or the end of one (HFTOKEN; not TOKENIZERS, MONKEY)."""
    for word in re.split(r"[^A-Z0-9]+", name.upper()):
        for secret in SECRET_NAME_WORDS:
            if word == secret or (secret != "KEY" and word.endswith(secret)):
                return secret
    return None


def _secret_hint(name: str, value: str) -> str | None:
    word = _name_word(name)
    if word is not None and not _FLAG_OR_NUMBER.fullmatch(value):
        return f"its name contains {word}"
    if any(p.fullmatch(value) for p in SECRET_VALUE_PATTERNS) or _looks_random(value):
        return "its value looks like a token"
    return None


def compute_spec_warnings(spec: InferenceServiceSpec) -> list[str]:
    """One message per literal env value that looks like a secret."""
    warnings = []
    for i, env in enumerate(spec.engine.env):
        if not env.value:
            continue
        hint = _secret_hint(env.name, env.value)
        if hint is not None:
            warnings.append(
                f"spec.engine.env[{i}] ({env.name}) has a literal value and {hint}: anyone who can read "
                "this InferenceService can read it; put it in a Secret and use valueFrom.secretKeyRef"
            )
    return warnings


def _architecture_mismatches(given: Architecture, known: Architecture, origin: str) -> list[str]:
    fields = (
        ("numLayers", given.num_layers, known.num_layers),
        ("hiddenSize", given.hidden_size, known.hidden_size),
        ("numAttentionHeads", given.num_attention_heads, known.num_attention_heads),
        ("numKeyValueHeads", given.kv_heads, known.kv_heads),
        ("headDim", given.effective_head_dim, known.effective_head_dim),
    )
    return [
        f"spec.model.architecture.{name} is {mine} but {origin} say {theirs}"
        for name, mine, theirs in fields
        if mine != theirs
    ]


def compute_model_mismatches(spec: InferenceServiceSpec, known: KnownFacts | None) -> list[str]:
    """One message per spec value that contradicts the model's known facts, naming both. A dtype is
    reported only when it is wider than the stored weights' (the weights cannot be served wider;
    narrower is quantizing at load, which engines do)."""
    if known is None:
        return []
    model, facts, origin = spec.model, known.facts, known.origin
    messages = []
    if model.parameters_billions is not None and facts.parameters is not None:
        exact = facts.parameters / 1e9
        if abs(model.parameters_billions - exact) > PARAMETER_TOLERANCE * exact:
            messages.append(
                f"spec.model.parametersBillions is {model.parameters_billions:g} but {origin} say "
                f"{exact:.2f} ({facts.parameters:,} parameters)"
            )
    if facts.dtype is not None and BYTES_PER_PARAM[model.dtype] > BYTES_PER_PARAM[facts.dtype]:
        messages.append(
            f"spec.model.dtype is {model.dtype.value} but {origin} say the weights are {facts.dtype.value}"
        )
    if model.architecture is not None and facts.architecture is not None:
        a = model.architecture
        given = Architecture(
            a.num_layers, a.hidden_size, a.num_attention_heads, a.num_key_value_heads, a.head_dim
        )
        messages += _architecture_mismatches(given, facts.architecture, origin)
    return messages
