"""`inferfleet fetch-model` as a process against loopback stand-ins of the Hugging Face Hub
(driven through the real huggingface_hub client via HF_ENDPOINT) and against moto's S3 server (the
minio client), each behind a pass-through that counts, throttles or corrupts the bytes it serves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferfleet.localcluster.file_standin import Traffic, build_fake_model
from inferfleet.localcluster.hf_standin import HubStandin
from inferfleet.localcluster.moto_s3 import SECRET_KEY, MotoS3
from inferfleet.localcluster.waiting import wait_for

HF_TOKEN = "hf_test_token"
AWS_KEY = "AKIAFETCHTEST"
MODEL = build_fake_model()
BIG_MODEL = build_fake_model(shard_bytes=24 << 20)
"""Shards above huggingface_hub's 10 MiB write chunk, so a kill can leave part of one on disk."""


@dataclass
class Store:
    """A running stand-in serving one model, and the URI and options that fetch it."""

    uri: str
    args: list[str]
    env: dict[str, str]
    traffic: Traffic
    checksums: dict[str, int]
    """How each of MODEL's files is verified: what the store publishes."""
    key_prefix: str = ""

    def served(self, path: str) -> int:
        return self.traffic.served[self.key_prefix + path]

    def corrupt(self, path: str) -> None:
        self.traffic.corrupt.add(self.key_prefix + path)


@dataclass
class Outcome:
    code: int
    result: dict[str, Any]
    stderr: str


def start_store(kind: str, files: dict[str, bytes]) -> tuple[Store, HubStandin | MotoS3]:
    if kind == "hf":
        hub = HubStandin("acme/tiny-llama", files, token=HF_TOKEN)
        env = {"HF_ENDPOINT": hub.start(), "HF_TOKEN": HF_TOKEN}
        # the shards are LFS files (sha256); config.json and the index are git blobs (sha1)
        return Store("hf://acme/tiny-llama", [], env, hub.traffic, {"git-sha1": 2, "sha256": 2}), hub
    s3 = MotoS3("models", {f"tiny-llama/{k}": v for k, v in files.items()}, access_key=AWS_KEY)
    url = s3.start()
    env = {"AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    uri, args = "s3://models/tiny-llama", ["--s3-endpoint-url", url]
    return Store(uri, args, env, s3.traffic, {"md5": len(files)}, "tiny-llama/"), s3


@pytest.fixture(params=["hf", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    running, server = start_store(request.param, MODEL)
    yield running
    server.stop()


@pytest.fixture(params=["hf", "s3"])
def big_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    running, server = start_store(request.param, BIG_MODEL)
    yield running
    server.stop()


def start_fetch(
    store: Store, root: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_"))}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferfleet",
            "fetch-model",
            store.uri,
            "--cache-root",
            str(root),
            *store.args,
            *extra,
        ],
        env={**clean, "HF_HOME": str(root.parent / "hf-home"), **store.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> Outcome:
    stdout, stderr = process.communicate(timeout=60)
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON line expected on stdout, got {stdout!r} (stderr: {stderr})"
    return Outcome(process.returncode, json.loads(lines[0]), stderr)


def fetch(store: Store, root: Path, *extra: str, env: dict[str, str] | None = None) -> Outcome:
    return finish(start_fetch(store, root, *extra, env=env))


def published_files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file() and p.name[0] != "."
    }


def staged_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("*/.staging-*/**/*") if p.is_file())


def test_a_fetch_publishes_every_file_with_the_sources_bytes_and_a_rerun_reuses_them(
    store: Store, tmp_path: Path
) -> None:
    root, termination_log = tmp_path / "cache", tmp_path / "termination-log"
    first = fetch(store, root, "--termination-log", str(termination_log))
    assert first.code == 0, first.stderr
    assert json.loads(termination_log.read_text()) == first.result
    assert first.result["from_cache"] is False
    assert (first.result["files"], first.result["bytes"]) == (len(MODEL), sum(map(len, MODEL.values())))
    assert first.result["checksums"] == store.checksums
    assert published_files(Path(first.result["path"])) == MODEL
    # What the operator learns of the model from the termination message: its published files' facts.
    elements = sum(len(data) - 8 - int.from_bytes(data[:8], "little") for n, data in MODEL.items()
                   if n.endswith(".safetensors")) // 2  # fmt: skip
    assert first.result["model"] == {
        "parameters": elements, "dtype": "bfloat16", "modelType": "llama",
        "architecture": {"num_layers": 2, "hidden_size": 512, "num_attention_heads": 8,
                         "num_key_value_heads": 2, "head_dim": None},
    }  # fmt: skip
    assert not list(root.glob("*/.staging-*")), "the staging directory became the published one"

    served = store.traffic.total
    again = fetch(store, root)
    assert again.code == 0, again.stderr
    assert again.result["from_cache"] is True
    assert again.result["path"] == first.result["path"]
    assert store.traffic.total == served, "a published model is not downloaded again"


def test_a_fetch_killed_mid_file_resumes_from_what_is_on_disk_and_was_never_visible(
    big_store: Store, tmp_path: Path
) -> None:
    root, shards = tmp_path / "cache", [p for p in BIG_MODEL if p.endswith(".safetensors")]
    big_store.traffic.bytes_per_second = 24 << 20
    process = start_fetch(big_store, root)
    wait_for(
        lambda: all(big_store.served(s) > 12 << 20 for s in shards) or process.poll() is not None,
        timeout=30,
        what="both shards half served",
    )
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL, "the kill landed after the fetch had finished"
    assert not [p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith((".", "refs"))]
    on_disk = staged_bytes(root)
    assert on_disk >= 10 << 20, "part of a shard was on disk when the fetch was killed"

    big_store.traffic.bytes_per_second = None
    wait_for(lambda: big_store.traffic.open_streams == 0, timeout=10, what="the killed fetch's streams ended")
    before = big_store.traffic.total
    rerun = fetch(big_store, root)
    assert rerun.code == 0, rerun.stderr
    assert published_files(Path(rerun.result["path"])) == BIG_MODEL
    assert big_store.traffic.total - before == rerun.result["bytes"] - on_disk, "only the missing bytes"


def test_a_corrupted_file_is_detected_deleted_and_never_published(store: Store, tmp_path: Path) -> None:
    root, shard = tmp_path / "cache", "model-00001-of-00002.safetensors"
    store.corrupt(shard)
    bad = fetch(store, root)
    assert bad.code == 3
    assert bad.result["error"] == "ChecksumMismatch"
    assert shard in bad.result["message"]
    assert "sha256" in bad.result["message"] or "md5" in bad.result["message"]
    assert not [p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith((".", "refs"))]
    assert not [p for p in root.rglob(shard)], "the corrupted download was deleted"

    store.traffic.corrupt.clear()
    served = store.traffic.total
    good = fetch(store, root)
    assert good.code == 0, good.stderr
    assert published_files(Path(good.result["path"])) == MODEL
    assert store.traffic.total - served == len(MODEL[shard]), "the verified files were kept"


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: smaller than the model (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_too_little_free_space_fails_with_the_numbers_before_downloading(
    store: Store, small_filesystem: Path
) -> None:
    outcome = fetch(store, small_filesystem / "cache", "--reserve-bytes", "0")
    assert outcome.code == 4
    assert outcome.result["error"] == "InsufficientSpace"
    needed = sum(map(len, MODEL.values()))
    assert f"needs {needed} bytes" in outcome.result["message"]
    free = re.search(r"but (\d+) bytes \(.*\) are free", outcome.result["message"])
    assert free is not None
    assert int(free.group(1)) <= 2 << 20
    assert store.traffic.total == 0, "nothing was downloaded"


def test_two_concurrent_fetches_of_one_model_download_it_once(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store.traffic.bytes_per_second = 256 << 10  # slow enough that the second fetch finds the first at work
    first = start_fetch(store, root)
    wait_for(
        lambda: store.traffic.total > 0 or first.poll() is not None,
        timeout=30,
        what="the first fetch started",
    )
    second = start_fetch(store, root)
    assert second.stderr is not None
    assert "waiting for another fetch" in second.stderr.readline()
    store.traffic.bytes_per_second = None
    outcomes = [finish(first), finish(second)]
    assert [o.code for o in outcomes] == [0, 0], [o.stderr for o in outcomes]
    assert [o.result["from_cache"] for o in outcomes] == [False, True]
    assert outcomes[0].result["path"] == outcomes[1].result["path"]
    assert {path: store.served(path) for path in MODEL} == {path: len(data) for path, data in MODEL.items()}


def test_the_hub_token_comes_from_hf_token(tmp_path: Path) -> None:
    running, server = start_store("hf", MODEL)
    try:
        refused = fetch(running, tmp_path / "cache", env={"HF_TOKEN": "hf_wrong"})
    finally:
        server.stop()
    assert refused.code == 5, "no retry heals a refused token: the Job's podFailurePolicy ends it"
    assert refused.result["error"] == "NotFound"
    assert "no access" in refused.result["message"]


def test_a_node_that_holds_the_model_serves_it_while_the_hub_is_down(tmp_path: Path) -> None:
    running, server = start_store("hf", MODEL)
    try:
        fetched = fetch(running, tmp_path / "cache")
    finally:
        server.stop()
    offline = fetch(running, tmp_path / "cache")
    assert (fetched.code, offline.code) == (0, 0), offline.stderr
    assert offline.result["from_cache"] is True
    assert offline.result["path"] == fetched.result["path"]
    assert "using it" in offline.stderr


@pytest.mark.parametrize("uri", ["gs://bucket/model", "oci://registry.example/model:1"])
def test_gs_and_oci_say_not_supported_yet(uri: str, tmp_path: Path) -> None:
    outcome = fetch(Store(uri, [], {}, Traffic(), {}), tmp_path / "cache")
    assert outcome.code == 2
    assert outcome.result["error"] == "Unsupported"
    assert "not supported yet" in outcome.result["message"]


def test_an_object_uploaded_in_parts_is_verified_by_its_multipart_etag(tmp_path: Path) -> None:
    """AWS CLI and boto3 upload files above 8 MiB in parts: the ETag is then no MD5 of the file."""
    shard = "model-00001-of-00002.safetensors"
    objects = {f"tiny-llama/{k}": v for k, v in BIG_MODEL.items()}
    s3 = MotoS3("models", objects, access_key=AWS_KEY, multipart=frozenset({f"tiny-llama/{shard}"}))
    env = {"AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    store = Store(
        "s3://models/tiny-llama", ["--s3-endpoint-url", s3.start()], env, s3.traffic, {}, "tiny-llama/"
    )
    try:
        good = fetch(store, tmp_path / "good")
        store.corrupt(shard)
        bad = fetch(store, tmp_path / "bad")
    finally:
        s3.stop()
    assert good.code == 0, good.stderr
    assert good.result["checksums"] == {"md5": len(BIG_MODEL) - 1, "s3-multipart": 1}
    assert published_files(Path(good.result["path"])) == BIG_MODEL
    assert (bad.code, bad.result["error"]) == (3, "ChecksumMismatch"), bad.result
    assert shard in bad.result["message"]
    assert "s3-multipart" in bad.result["message"]
