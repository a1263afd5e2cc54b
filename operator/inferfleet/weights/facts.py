"""A model's facts from a directory of its files: config.json, the safetensors index and the
safetensors headers (never the weights themselves). `inferfleet plan --model-dir` reads a local
copy with it, and a fetch reports the facts of what it published."""

from __future__ import annotations

import json
from pathlib import Path

from inferfleet.planning.model_files import (
    ModelFacts,
    ModelFiles,
    build_model_facts,
    parse_safetensors_header,
)

MAX_HEADER_BYTES = 100 * 2**20


class ModelDirError(ValueError):
    """The directory holds no readable model: no config.json, bad JSON, a broken header."""


def read_safetensors_header(path: Path) -> dict[str, int]:
    """Elements by dtype of one safetensors file, reading only its header."""
    with path.open("rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        return parse_safetensors_header(head + f.read(min(size, MAX_HEADER_BYTES)))


def read_model_facts(directory: Path) -> ModelFacts:
    try:
        config = json.loads((directory / "config.json").read_text())
        index_path = directory / "model.safetensors.index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else None
        tensors = [read_safetensors_header(p) for p in sorted(directory.glob("*.safetensors"))]
    except (OSError, ValueError) as e:  # a ModelFileError or JSONDecodeError is a ValueError
        raise ModelDirError(f"reading the model in {directory}: {e}") from e
    if not isinstance(config, dict):
        raise ModelDirError(f"{directory / 'config.json'} is not a JSON object")
    return build_model_facts(ModelFiles(config, index if isinstance(index, dict) else None, tensors))
