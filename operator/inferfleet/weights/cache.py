"""The node-local cache on disk: its layout, the per-model lock, verification and the atomic publish.

<root>/<key>/.lock                 one fetch of this model on this node at a time (flock)
<root>/<key>/.staging-<revision>/  downloads in progress: .partial/<path> while a file
                                   arrives, <path> once it is complete and verified
<root>/<key>/<revision>/           published: every file verified, plus PUBLISHED_MARKER;
                                   appears in one rename, so it is never half-written
<root>/<key>/refs/<ref>            the revision last fetched for a branch, tag or `latest`
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from inferfleet.weights.plan import Listing, RemoteFile

PUBLISHED_MARKER = ".inferfleet-published.json"
PARTIAL_DIR = ".partial"
_CHUNK = 8 << 20


@dataclass(frozen=True)
class ModelDir:
    root: Path
    key: str

    @property
    def base(self) -> Path:
        return self.root / self.key

    @property
    def lock_path(self) -> Path:
        return self.base / ".lock"

    def published(self, revision: str) -> Path:
        return self.base / revision

    def staging(self, revision: str) -> Path:
        return self.base / f".staging-{revision}"

    def ref_path(self, ref: str) -> Path:
        return self.base / "refs" / quote(ref, safe="")


@contextlib.contextmanager
def hold_lock(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive flock on `path`; `on_wait` runs once if another process holds it.
    The kernel drops the lock when the holder dies, even by kill -9."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_published(path: Path) -> dict[str, object] | None:
    """The marker of a published revision, None when `path` is not one."""
    try:
        marker = json.loads((path / PUBLISHED_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def list_staged(staging: Path, listing: Listing) -> dict[str, tuple[int, bool]]:
    """path -> (bytes present, complete) for the listed files found in the staging directory;
    a file at its own path there was verified before it was moved there."""
    found: dict[str, tuple[int, bool]] = {}
    for f in listing.files:
        for where, complete in ((staging / f.path, True), (staging / PARTIAL_DIR / f.path, False)):
            with contextlib.suppress(FileNotFoundError):
                found[f.path] = (where.stat().st_size, complete)
                break
    return found


def compute_file_digest(path: Path, kind: str, size: int, part_size: int | None = None) -> str:
    if kind == "s3-multipart":
        assert part_size, "an S3 multipart ETag is checked with its part size"
        return _multipart_etag(path, part_size)
    h = hashlib.sha1() if kind == "git-sha1" else hashlib.new(kind)
    if kind == "git-sha1":
        h.update(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _multipart_etag(path: Path, part_size: int) -> str:
    """What S3 answers as the ETag of this file uploaded in parts of `part_size` bytes."""
    digests = []
    with open(path, "rb") as f:
        while True:
            part, left = hashlib.md5(), part_size
            while left and (chunk := f.read(min(_CHUNK, left))):
                part.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            digests.append(part.digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def verify_file(path: Path, expected: RemoteFile) -> str | None:
    """Why the downloaded file is not the published one, None when it is."""
    size = path.stat().st_size
    if size != expected.size:
        return f"{expected.path}: {size} bytes, the source lists {expected.size}"
    if expected.checksum is None:
        return None
    kind, want = expected.checksum
    got = compute_file_digest(path, kind, size, expected.part_size)
    return None if got == want else f"{expected.path}: {kind} {got}, the source publishes {want}"


def free_bytes(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(root).free


def publish(staging: Path, published: Path, marker: dict[str, object]) -> None:
    """Make the staged, verified files visible under `published` in one rename."""
    shutil.rmtree(staging / PARTIAL_DIR, ignore_errors=True)
    (staging / PUBLISHED_MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
    _fsync_tree(staging)
    if published.exists():  # a leftover without a marker (never ours: we rename whole directories)
        shutil.rmtree(published)
    os.rename(staging, published)
    _fsync_dir(published.parent)


def remove_stagings(model: ModelDir, keep: str) -> None:
    """Drop the partial downloads of other revisions (a branch moved on): only the holder of the
    model's lock calls this, so none of them is in use."""
    for path in model.base.glob(".staging-*"):
        if path != model.staging(keep):
            shutil.rmtree(path, ignore_errors=True)


def write_ref(path: Path, revision: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(revision + "\n")
    os.replace(tmp, path)


def _fsync_tree(top: Path) -> None:
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
