"""Remove one model from a node's cache (`inferfleet fetch-model SOURCE --evict`), the eviction
Job's entrypoint. The operator decides what goes (planning/weights_nodes.py: least recently used
over the node's byte budget, never weights a pod uses); this only removes, safely:

- under the model's fetch lock, so never while a fetch of it runs on the node;
- `refs/` first (a waiting engine pod then waits for a new fetch instead of linking a revision
  about to go), then each revision renamed out of sight in one step before its files are deleted,
  so no reader ever sees half a revision; the lock file stays (a fetch waiting on it holds it).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from inferfleet.weights import cache
from inferfleet.weights.fetch import EXIT_USAGE, FetchError
from inferfleet.weights.sources import SourceError, build_cache_key, parse_source

TRASH_PREFIX = ".evicting-"


@dataclass(frozen=True)
class EvictResult:
    source: str
    path: str
    evicted: bool
    """False: the node held nothing of this model."""
    bytes: int
    """Bytes of files removed."""
    revisions: list[str]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def evict_model(uri: str, cache_root: Path) -> EvictResult:
    try:
        source = parse_source(uri)
    except SourceError as e:
        raise FetchError(EXIT_USAGE, "Unsupported" if e.unsupported else "BadSource", str(e)) from e
    model = cache.ModelDir(cache_root, build_cache_key(source))
    if not model.base.is_dir():
        return EvictResult(source.uri, str(model.base), False, 0, [])
    with cache.hold_lock(model.lock_path, on_wait=lambda: _say(f"waiting for a fetch of {source.uri}")):
        freed = _remove(model.base / "refs")
        revisions = []
        for path in sorted(model.base.iterdir()):
            if path.name == model.lock_path.name or not path.is_dir():
                continue
            if not path.name.startswith("."):
                revisions.append(path.name)
            trash = path if path.name.startswith(TRASH_PREFIX) else model.base / f"{TRASH_PREFIX}{path.name}"
            os.replace(path, trash)
            freed += _remove(trash)
    _say(f"removed {source.uri}: {', '.join(revisions) or 'no published revision'}, {freed} bytes")
    return EvictResult(source.uri, str(model.base), True, freed, revisions)


def _remove(path: Path) -> int:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    shutil.rmtree(path, ignore_errors=True)
    return size


def _say(message: str) -> None:
    sys.stderr.write(f"fetch-model --evict: {message}\n")
    sys.stderr.flush()
