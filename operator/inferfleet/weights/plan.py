"""What to download for a model, whether it fits, and what the fetch reports: pure decisions."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

RESERVED_NAMES = (".partial", ".inferfleet-published.json")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model as its store publishes it: size and the checksums the store vouches for."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None
    """A git blob id: sha1 of `blob <size>\\0` + content (Hub files not stored in LFS)."""
    md5: str | None = None
    """An S3 ETag that is an MD5 (single-part uploads)."""
    multipart_etag: str | None = None
    """An S3 ETag of an object uploaded in parts: the MD5 of the parts' MD5s, "-", the count."""
    part_size: int | None = None
    """The size of each part but the last (read from the store), which that ETag is checked with."""

    @property
    def checksum(self) -> tuple[str, str] | None:
        """(kind, hex digest) of the strongest checksum published, None when only the size is."""
        multipart = self.multipart_etag if self.part_size else None
        for kind, value in (
            ("sha256", self.sha256),
            ("git-sha1", self.git_sha1),
            ("md5", self.md5),
            ("s3-multipart", multipart),
        ):
            if value:
                return kind, value.lower()
        return None


@dataclass(frozen=True)
class Listing:
    """A model at one immutable revision (a Hub commit; for S3, a digest of the objects' ETags)."""

    revision: str
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True)
class FileStep:
    file: RemoteFile
    have: int
    """Bytes of it already downloaded (a partial file from an interrupted run)."""


@dataclass(frozen=True)
class FetchPlan:
    revision: str
    steps: tuple[FileStep, ...]
    """Files still to download, largest first (they bound the fetch's duration)."""
    done: tuple[RemoteFile, ...]
    """Files already downloaded and verified in the staging directory."""
    total_bytes: int
    missing_bytes: int


def compute_path_problems(files: Iterable[RemoteFile]) -> list[str]:
    """Paths a store listed that must not be written: outside the model's directory, clashing
    with the cache's own names, or twice."""
    problems, seen = [], set()
    for f in files:
        parts = PurePosixPath(f.path).parts
        if (
            not f.path
            or f.path.startswith("/")
            or ".." in parts
            or "\\" in f.path
            or parts[0] in RESERVED_NAMES
        ):
            problems.append(f"unsafe path {f.path!r}")
        elif f.path in seen:
            problems.append(f"listed twice: {f.path!r}")
        if f.size < 0:
            problems.append(f"negative size for {f.path!r}")
        seen.add(f.path)
    return problems


def plan_fetch(listing: Listing, on_disk: Mapping[str, tuple[int, bool]]) -> FetchPlan:
    """`on_disk`: path -> (bytes present, verified and complete) in the staging directory."""
    steps, done = [], []
    for f in listing.files:
        have, complete = on_disk.get(f.path, (0, False))
        if complete and have == f.size:
            done.append(f)
        else:
            steps.append(FileStep(f, have if have <= f.size and not complete else 0))
    steps.sort(key=lambda s: (-s.file.size, s.file.path))
    total = sum(f.size for f in listing.files)
    return FetchPlan(
        revision=listing.revision,
        steps=tuple(steps),
        done=tuple(done),
        total_bytes=total,
        missing_bytes=sum(s.file.size - s.have for s in steps),
    )


def compute_space_shortfall(missing_bytes: int, free_bytes: int, reserve_bytes: int) -> int:
    """Bytes short of downloading the rest and still leaving `reserve_bytes` free (0: it fits)."""
    return max(0, missing_bytes + reserve_bytes - free_bytes)


def build_space_message(root: str, missing_bytes: int, reserve_bytes: int, free_bytes: int) -> str:
    return (
        f"not enough free space in {root}: the fetch needs {missing_bytes} bytes "
        f"({build_size_text(missing_bytes)}) and keeps {reserve_bytes} bytes free, "
        f"but {free_bytes} bytes ({build_size_text(free_bytes)}) are free"
    )


def compute_listing_revision(files: Iterable[RemoteFile]) -> str:
    """A revision for a store without one (S3): a digest of what it lists, so changed objects are
    a new revision and never mix with the old ones."""
    lines = sorted(f"{f.path}\t{f.size}\t{f.md5 or f.sha256 or f.multipart_etag or ''}" for f in files)
    return "etag-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def build_marker(source: str, listing: Listing) -> dict[str, object]:
    """What a published revision records about itself (and a later fetch reports from cache)."""
    kinds = Counter(f.checksum[0] if f.checksum else "size" for f in listing.files)
    return {
        "source": source,
        "revision": listing.revision,
        "files": len(listing.files),
        "bytes": sum(f.size for f in listing.files),
        "checksums": dict(sorted(kinds.items())),
    }


def build_size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
