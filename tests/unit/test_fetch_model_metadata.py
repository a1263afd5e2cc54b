"""`inferfleet fetch-model --metadata-only` as a process against the loopback Hub stand-in and
moto's S3 server (the stores of tests/unit/test_fetch_model.py): the facts of a model from
config.json, its index and the safetensors headers (ranged reads), without its weights and
without a cache."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from inferfleet.localcluster.file_standin import build_fake_model
from inferfleet.localcluster.hf_standin import HubStandin
from inferfleet.planning.model_files import build_facts_record
from inferfleet.weights.facts import read_model_facts
from tests.unit.test_fetch_model import Store, start_store

MODEL = build_fake_model()
SHARDS = sorted(p for p in MODEL if p.endswith(".safetensors"))


@pytest.fixture(params=["hf", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    running, server = start_store(request.param, MODEL)
    yield running
    server.stop()


def metadata(
    store: Store, work: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, Any, str]:
    """Run `fetch-model --metadata-only` in `work` (no cache root); (exit code, JSON line, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_"))}
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferfleet",
            "fetch-model",
            store.uri,
            "--metadata-only",
            *store.args,
            *extra,
        ],
        env={**clean, "HF_HOME": str(work / "hf-home"), "TMPDIR": str(work), **store.env, **(env or {})},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON line expected on stdout, got {done.stdout!r} (stderr: {done.stderr})"
    return done.returncode, json.loads(lines[0]), done.stderr


def test_the_facts_come_from_the_headers_alone_and_match_what_the_files_say(
    store: Store, tmp_path: Path
) -> None:
    local = tmp_path / "files"
    local.mkdir()
    for name, data in MODEL.items():
        (local / name).write_bytes(data)
    termination_log = tmp_path / "termination-log"
    code, result, stderr = metadata(store, tmp_path / "work", "--termination-log", str(termination_log))
    assert code == 0, stderr
    assert json.loads(termination_log.read_text()) == result
    # The record a full fetch carries for these files, read here from their heads only.
    assert result["model"] == build_facts_record(read_model_facts(local))
    assert result["model"]["parameters"] == 2 * 512 * 2048
    assert result["metadata_only"] is True
    assert (result["bytes"], result["files"], result["headers"]) == (sum(map(len, MODEL.values())), 4, 2)
    for shard in SHARDS:  # a 2 MiB shard: its header and at most the library's first 100 kB range
        assert 0 < store.served(shard) <= 100_001, f"{shard}: {store.served(shard)} bytes served"
    work = tmp_path / "work"
    left = [p.name for p in work.iterdir() if p.name != "hf-home"]
    assert left == [], f"the scratch directory is removed: {left}"


def test_a_model_the_source_does_not_have_fails_as_not_found(store: Store, tmp_path: Path) -> None:
    missing = replace(store, uri=store.uri.replace("tiny-llama", "no-such-model"))
    code, result, _ = metadata(missing, tmp_path)
    assert (code, result["error"]) == (5, "NotFound"), result
    assert store.traffic.total == 0


def test_a_wrong_hub_token_fails_as_not_found(tmp_path: Path) -> None:
    running, server = start_store("hf", MODEL)
    try:
        code, result, _ = metadata(running, tmp_path, env={"HF_TOKEN": "hf_wrong"})
    finally:
        server.stop()
    assert (code, result["error"]) == (5, "NotFound"), result
    assert "no access" in result["message"]


def test_a_corrupt_config_is_refused(store: Store, tmp_path: Path) -> None:
    store.corrupt("config.json")
    code, result, _ = metadata(store, tmp_path)
    assert (code, result["error"]) == (3, "ChecksumMismatch"), result
    assert "config.json" in result["message"]


def test_a_model_without_safetensors_gives_its_config_facts(tmp_path: Path) -> None:
    config = {
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000, "torch_dtype": "float16",
    }  # fmt: skip
    files = {"config.json": json.dumps(config).encode(), "pytorch_model.bin": b"\0" * 4096}
    hub = HubStandin("acme/tiny-llama", files)
    try:
        store = Store("hf://acme/tiny-llama", [], {"HF_ENDPOINT": hub.start()}, hub.traffic, {})
        code, result, stderr = metadata(store, tmp_path)
    finally:
        hub.stop()
    assert code == 0, stderr
    # llama arithmetic: 2 layers x (attention 4*256*256 + mlp 3*256*512 + 2 norms) + embeddings
    layer = 4 * 256 * 256 + 3 * 256 * 512 + 2 * 256
    assert result["model"]["parameters"] == 2 * layer + 2 * 1000 * 256 + 256
    assert result["headers"] == 0
    assert hub.traffic.served["pytorch_model.bin"] == 0


def test_a_truncated_header_on_s3_is_a_bad_header(tmp_path: Path) -> None:
    broken = dict(MODEL)
    broken[SHARDS[0]] = struct.pack("<Q", 1 << 40) + b"{}"
    running, server = start_store("s3", broken)
    try:
        code, result, _ = metadata(running, tmp_path)
    finally:
        server.stop()
    assert (code, result["error"]) == (1, "BadHeader"), result
