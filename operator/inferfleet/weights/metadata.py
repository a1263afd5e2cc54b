"""`fetch-model --metadata-only`: a model's facts without its weights, for a model nobody knows.

Downloads config.json and the safetensors index, and reads only the header of each top-level
safetensors file (ranged reads of its first bytes; on the Hub through huggingface_hub's
`get_safetensors_metadata`) into a scratch directory, then reports the facts a full fetch reports
(`read_model_facts` of that directory, the same record). The node cache is not touched.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from inferfleet.weights import cache
from inferfleet.weights.fetch import (
    EXIT_CORRUPT,
    EXIT_FAILED,
    FetchError,
    FetchOptions,
    facts_of,
    list_source,
    open_store,
    parse_uri,
    store_failure,
)
from inferfleet.weights.plan import Listing, RemoteFile
from inferfleet.weights.stores import Store, StoreError

SMALL_FILES = ("config.json", "model.safetensors.index.json")
"""Read whole; of every other file at most its safetensors header is read."""
MAX_SMALL_BYTES = 16 << 20


@dataclass(frozen=True)
class MetadataResult:
    source: str
    revision: str
    bytes: int
    """The model's size as the source lists it (what a full fetch would download)."""
    files: int
    headers: int
    """Safetensors headers read."""
    read_bytes: int
    """Bytes kept from the source: config.json, the index and the headers."""
    seconds: float
    model: dict[str, object] | None
    """The facts (`build_facts_record`), as a full fetch reports them; None without config.json."""
    metadata_only: bool = True

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "revision": self.revision,
            "bytes": self.bytes,
            "files": self.files,
            "headers": self.headers,
            "read_bytes": self.read_bytes,
            "seconds": self.seconds,
            "model": self.model,
            "metadata_only": self.metadata_only,
        }


def compute_header_files(listing: Listing) -> list[RemoteFile]:
    """The safetensors files whose headers count the parameters: the top-level ones, as
    `read_model_facts` reads a directory."""
    return [f for f in listing.files if "/" not in f.path and f.path.endswith(".safetensors")]


def fetch_metadata(options: FetchOptions, scratch_dir: Path | None = None) -> MetadataResult:
    """`scratch_dir`: where the temporary directory goes (None: the system's temp directory)."""
    started = time.monotonic()
    source = parse_uri(options.uri)
    store = open_store(source, options)
    listing = list_source(store)
    with tempfile.TemporaryDirectory(prefix="inferfleet-metadata-", dir=scratch_dir) as scratch:
        directory = Path(scratch)
        read = _read_small_files(store, listing, directory)
        try:
            headers = store.read_headers(compute_header_files(listing))
        except StoreError as e:
            raise store_failure(e) from e
        for name, raw in headers.items():
            (directory / name).write_bytes(raw)
        model = facts_of(directory)
    return MetadataResult(
        source=source.uri,
        revision=listing.revision,
        bytes=sum(f.size for f in listing.files),
        files=len(listing.files),
        headers=len(headers),
        read_bytes=read + sum(len(raw) for raw in headers.values()),
        seconds=round(time.monotonic() - started, 3),
        model=model,
    )


def _read_small_files(store: Store, listing: Listing, directory: Path) -> int:
    """config.json and the index, verified against what the source publishes; bytes read."""
    total = 0
    for file in listing.files:
        if file.path not in SMALL_FILES:
            continue
        if file.size > MAX_SMALL_BYTES:
            raise FetchError(EXIT_FAILED, "BadListing", f"{file.path}: {file.size} bytes is not a config")
        target = directory / file.path
        with open(target, "wb") as out:
            try:
                store.download(file, out, 0)
            except StoreError as e:
                raise store_failure(e) from e
        problem = cache.verify_file(target, file)
        if problem:
            raise FetchError(EXIT_CORRUPT, "ChecksumMismatch", f"{problem}; nothing was read from it")
        total += file.size
    return total
