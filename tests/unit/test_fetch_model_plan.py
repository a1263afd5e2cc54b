"""The fetch's pure decisions: which URI is which store, the cache's names, what is left to
download after an interrupted run, which listed paths are refused, whether it fits."""

from __future__ import annotations

import pytest

from inferfleet.weights.plan import (
    FileStep,
    Listing,
    RemoteFile,
    build_marker,
    compute_listing_revision,
    compute_path_problems,
    compute_space_shortfall,
    plan_fetch,
)
from inferfleet.weights.sources import SourceError, build_cache_key, parse_source

SHARD1 = RemoteFile("model-00001-of-00002.safetensors", 5000, sha256="a" * 64)
SHARD2 = RemoteFile("model-00002-of-00002.safetensors", 4000, sha256="b" * 64)
CONFIG = RemoteFile("config.json", 100, git_sha1="c" * 40)
LISTING = Listing("abc123", (CONFIG, SHARD1, SHARD2))


@pytest.mark.parametrize(
    ("uri", "scheme", "location", "ref", "ref_name"),
    [
        ("hf://meta-llama/Llama-3.1-8B", "hf", "meta-llama/Llama-3.1-8B", None, "main"),
        ("hf://Qwen/Qwen3-8B@v1.0", "hf", "Qwen/Qwen3-8B", "v1.0", "v1.0"),
        ("s3://models/llama/8b/", "s3", "models/llama/8b", None, "latest"),
    ],
)
def test_parse_source(uri: str, scheme: str, location: str, ref: str | None, ref_name: str) -> None:
    source = parse_source(uri)
    assert (source.scheme, source.location, source.ref, source.ref_name) == (scheme, location, ref, ref_name)


def test_an_s3_prefix_is_a_folder() -> None:
    assert parse_source("s3://models/llama/8b").prefix == "llama/8b/"
    assert parse_source("s3://models").prefix == ""


@pytest.mark.parametrize(
    ("uri", "unsupported"),
    [
        ("gs://b/m", True),
        ("oci://r/m:1", True),
        ("ftp://x/y", True),
        ("hf://just-a-name", False),
        ("llama", False),
    ],
)
def test_unusable_uris_are_refused_and_known_schemes_say_not_yet(uri: str, unsupported: bool) -> None:
    with pytest.raises(SourceError) as refused:
        parse_source(uri)
    assert refused.value.unsupported is unsupported


def test_cache_keys_are_readable_and_tell_lookalike_sources_apart() -> None:
    key = build_cache_key(parse_source("hf://Qwen/Qwen3-8B@main"))
    assert key.startswith("hf--Qwen--Qwen3-8B--")
    assert key == build_cache_key(parse_source("hf://Qwen/Qwen3-8B@other")), "revisions live below the key"
    assert build_cache_key(parse_source("s3://b/a--b")) != build_cache_key(parse_source("s3://b/a/b"))


def test_a_fresh_fetch_plans_every_file_largest_first() -> None:
    plan = plan_fetch(LISTING, {})
    assert plan.steps == (FileStep(SHARD1, 0), FileStep(SHARD2, 0), FileStep(CONFIG, 0))
    assert (plan.total_bytes, plan.missing_bytes, plan.done) == (9100, 9100, ())


def test_a_rerun_skips_verified_files_and_resumes_partial_ones() -> None:
    on_disk = {CONFIG.path: (100, True), SHARD1.path: (3000, False), SHARD2.path: (4000, True)}
    plan = plan_fetch(LISTING, on_disk)
    assert plan.done == (CONFIG, SHARD2)
    assert plan.steps == (FileStep(SHARD1, 3000),)
    assert plan.missing_bytes == 2000


def test_a_partial_file_longer_than_listed_starts_over() -> None:
    plan = plan_fetch(LISTING, {SHARD2.path: (4500, False), CONFIG.path: (99, True)})
    assert FileStep(SHARD2, 0) in plan.steps
    assert FileStep(CONFIG, 0) in plan.steps, "a complete file of the wrong size is fetched again"


def test_listed_paths_that_would_escape_or_clash_are_refused() -> None:
    bad = [RemoteFile(p, 1) for p in ("../etc/passwd", "/abs", "a/../../b", ".partial/x", "ok", "ok")]
    assert compute_path_problems(bad) == [
        "unsafe path '../etc/passwd'",
        "unsafe path '/abs'",
        "unsafe path 'a/../../b'",
        "unsafe path '.partial/x'",
        "listed twice: 'ok'",
    ]
    assert compute_path_problems(LISTING.files) == []


@pytest.mark.parametrize(
    ("missing", "free", "reserve", "short"),
    [(100, 1000, 0, 0), (100, 1000, 900, 0), (100, 1000, 901, 1), (5000, 2000, 0, 3000)],
)
def test_space_shortfall_counts_the_reserve(missing: int, free: int, reserve: int, short: int) -> None:
    assert compute_space_shortfall(missing, free, reserve) == short


def test_an_s3_revision_changes_when_an_object_does() -> None:
    a = (RemoteFile("x", 1, md5="0" * 32), RemoteFile("y", 2))
    b = (RemoteFile("x", 1, md5="1" * 32), RemoteFile("y", 2))
    assert compute_listing_revision(a) == compute_listing_revision(tuple(reversed(a)))
    assert compute_listing_revision(a) != compute_listing_revision(b)


def test_the_marker_counts_files_by_the_checksum_that_verified_them() -> None:
    multipart = RemoteFile("model-00003-of-00003.safetensors", 7000)  # an S3 multipart ETag is no MD5
    marker = build_marker("hf://acme/m", Listing("abc123", (*LISTING.files, multipart)))
    assert marker == {
        "source": "hf://acme/m",
        "revision": "abc123",
        "files": 4,
        "bytes": 16100,
        "checksums": {"git-sha1": 1, "sha256": 2, "size": 1},
    }
