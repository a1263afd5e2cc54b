"""Warnings about a valid spec: things that work but should not be done (a Warning Event each).

Never echo the suspect value itself: the warning goes into Events that more people can read.
"""

from __future__ import annotations

import re

from inferfleet.api import InferenceServiceSpec

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
