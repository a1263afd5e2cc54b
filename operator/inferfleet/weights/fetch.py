"""One fetch: list the model's files, plan, check space, download, verify, publish."""

from __future__ import annotations

import errno
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from inferfleet.planning.model_files import build_facts_record
from inferfleet.weights import cache
from inferfleet.weights.facts import ModelDirError, read_model_facts
from inferfleet.weights.plan import (
    FetchPlan,
    FileStep,
    Listing,
    build_marker,
    build_size_text,
    build_space_message,
    compute_path_problems,
    compute_space_shortfall,
    plan_fetch,
)
from inferfleet.weights.sources import ModelSource, SourceError, build_cache_key, parse_source
from inferfleet.weights.stores import Store, StoreError

EXIT_FAILED = 1
"""The source failed or was unreachable, or a download ended early (a rerun resumes)."""
EXIT_USAGE = 2
"""A bad or not yet supported URI or option."""
EXIT_CORRUPT = 3
"""A downloaded file differs from what the source publishes; it was deleted, nothing published."""
EXIT_NO_SPACE = 4
"""The cache filesystem has not enough free space."""
EXIT_NOT_FOUND = 5
"""The source has no such model or refuses these credentials (401/403/404): a rerun cannot help."""


class FetchError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


def store_failure(e: StoreError) -> FetchError:
    """A store's failure as the fetch reports it: not found apart, since only a fix heals it."""
    return FetchError(EXIT_NOT_FOUND if e.reason == "NotFound" else EXIT_FAILED, e.reason, str(e))


@dataclass(frozen=True)
class FetchOptions:
    uri: str
    cache_root: Path
    workers: int = 4
    reserve_bytes: int = 256 << 20
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    hf_token: str | None = None


@dataclass(frozen=True)
class FetchResult:
    source: str
    path: str
    revision: str
    bytes: int
    files: int
    checksums: dict[str, int]
    """Files verified by each kind of checksum; `size` for those whose source publishes none
    (S3 multipart uploads)."""
    downloaded_bytes: int
    seconds: float
    from_cache: bool
    model: dict[str, object] | None = None
    """The facts of the published files (config.json, safetensors index and headers), for the
    operator's status.model; None when they hold no readable config.json."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_uri(uri: str) -> ModelSource:
    try:
        return parse_source(uri)
    except SourceError as e:
        raise FetchError(EXIT_USAGE, "Unsupported" if e.unsupported else "BadSource", str(e)) from e


def fetch_model(options: FetchOptions) -> FetchResult:
    started = time.monotonic()
    source = parse_uri(options.uri)
    store = open_store(source, options)
    model = cache.ModelDir(options.cache_root, build_cache_key(source))
    with cache.hold_lock(model.lock_path, on_wait=lambda: _say(f"waiting for another fetch of {source.uri}")):
        try:
            listing = list_source(store)
        except FetchError as e:
            cached = _published_for_ref(model, source) if e.reason == "SourceUnavailable" else None
            if cached is None:
                raise
            _say(f"{e}; the node already holds {source.ref_name}: using it")
            return _result(source, *cached, downloaded=0, started=started, from_cache=True)
        published = model.published(listing.revision)
        marker = cache.read_published(published)
        from_cache, downloaded = marker is not None, 0
        if marker is None:
            cache.remove_stagings(model, keep=listing.revision)
            downloaded = _fetch_into_staging(store, listing, model.staging(listing.revision), options)
            marker = build_marker(source.uri, listing)
            cache.publish(model.staging(listing.revision), published, marker)
        cache.write_ref(model.ref_path(source.ref_name), listing.revision)
    return _result(source, published, marker, downloaded=downloaded, started=started, from_cache=from_cache)


def _published_for_ref(model: cache.ModelDir, source: ModelSource) -> tuple[Path, dict[str, object]] | None:
    """The published revision the source's ref pointed at when it was last fetched, if any."""
    try:
        revision = model.ref_path(source.ref_name).read_text().strip()
    except OSError:
        return None
    marker = cache.read_published(model.published(revision)) if revision else None
    return None if marker is None else (model.published(revision), marker)


def _result(
    source: ModelSource,
    path: Path,
    marker: dict[str, object],
    *,
    downloaded: int,
    started: float,
    from_cache: bool,
) -> FetchResult:
    checksums = marker.get("checksums")
    return FetchResult(
        source=source.uri,
        path=str(path),
        revision=str(marker.get("revision", path.name)),
        bytes=int(str(marker.get("bytes", 0))),
        files=int(str(marker.get("files", 0))),
        checksums={str(k): int(v) for k, v in checksums.items()} if isinstance(checksums, dict) else {},
        downloaded_bytes=downloaded,
        seconds=round(time.monotonic() - started, 3),
        from_cache=from_cache,
        model=facts_of(path),
    )


def facts_of(path: Path) -> dict[str, object] | None:
    try:
        return build_facts_record(read_model_facts(path)) or None
    except ModelDirError:
        return None  # not every model is a transformers checkpoint; the fetch itself succeeded


def open_store(source: ModelSource, options: FetchOptions) -> Store:
    try:
        if source.scheme == "hf":
            from inferfleet.weights.hub import HubStore

            return HubStore(source, options.hf_token)
        from inferfleet.weights.s3 import S3Store

        return S3Store(source, options.s3_endpoint_url, options.s3_region)
    except StoreError as e:
        raise FetchError(EXIT_USAGE, e.reason, str(e)) from e


def list_source(store: Store) -> Listing:
    try:
        listing = store.list_files()
    except StoreError as e:
        raise store_failure(e) from e
    problems = compute_path_problems(listing.files)
    if problems:
        raise FetchError(
            EXIT_FAILED, "BadListing", "the source lists files we will not write: " + "; ".join(problems)
        )
    return listing


def _fetch_into_staging(store: Store, listing: Listing, staging: Path, options: FetchOptions) -> int:
    """Download what the staging directory lacks; every file verified. Returns bytes downloaded."""
    plan = plan_fetch(listing, cache.list_staged(staging, listing))
    free = cache.free_bytes(options.cache_root)
    short = compute_space_shortfall(plan.missing_bytes, free, options.reserve_bytes)
    if short:
        message = build_space_message(
            str(options.cache_root), plan.missing_bytes, options.reserve_bytes, free
        )
        raise FetchError(EXIT_NO_SPACE, "InsufficientSpace", message)
    _say(_describe(plan))
    (staging / cache.PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures = [pool.submit(_fetch_file, store, step, staging) for step in plan.steps]
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        raise _worst(errors)
    return plan.missing_bytes


def _fetch_file(store: Store, step: FileStep, staging: Path) -> None:
    final, partial = staging / step.file.path, staging / cache.PARTIAL_DIR / step.file.path
    final.unlink(missing_ok=True)  # complete but not what is listed now
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "r+b" if step.have else "wb") as out:
            out.truncate(step.have)
            out.seek(step.have)
            store.download(step.file, out, step.have)
    except StoreError as e:
        raise store_failure(e) from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise FetchError(EXIT_NO_SPACE, "InsufficientSpace", f"{step.file.path}: {e}") from e
        # huggingface_hub reports a short body as an OSError; the size check below says which file
    size = partial.stat().st_size
    if size < step.file.size:
        raise FetchError(
            EXIT_FAILED, "Incomplete", f"{step.file.path}: {size} of {step.file.size} bytes; rerun to resume"
        )
    problem = cache.verify_file(partial, step.file)
    if problem:
        partial.unlink()
        raise FetchError(
            EXIT_CORRUPT, "ChecksumMismatch", f"{problem}; the file was deleted and nothing was published"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    _say(f"fetched {step.file.path} ({build_size_text(step.file.size)})")


def _worst(errors: list[BaseException]) -> BaseException:
    """A corrupt file is reported before a network failure, which is reported before the rest."""
    rank = {EXIT_CORRUPT: 0, EXIT_NO_SPACE: 1, EXIT_FAILED: 2}
    return min(errors, key=lambda e: rank.get(e.code, 3) if isinstance(e, FetchError) else 4)


def _describe(plan: FetchPlan) -> str:
    resumed = sum(s.have for s in plan.steps)
    return (
        f"revision {plan.revision}: {len(plan.steps)} files to fetch "
        f"({build_size_text(plan.missing_bytes)}), {len(plan.done)} already staged, "
        f"{build_size_text(resumed)} resumed"
    )


def _say(message: str) -> None:
    sys.stderr.write(f"fetch-model: {message}\n")  # one write: lines from worker threads stay whole
    sys.stderr.flush()
