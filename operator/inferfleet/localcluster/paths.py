"""Where the repository, the cache and the pinned versions are."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The source checkout this package runs from (the local cluster is a development tool)."""
    env = os.environ.get("INFERFLEET_REPO")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "hack" / "versions.env").is_file():
            return parent
    raise RuntimeError("cannot find the inferfleet checkout (hack/versions.env); set INFERFLEET_REPO")


def cache_dir() -> Path:
    """Ignored folder holding built binaries and cluster state; INFERFLEET_CACHE overrides it."""
    env = os.environ.get("INFERFLEET_CACHE")
    return Path(env) if env else repo_root() / ".cache"


def pinned_versions() -> dict[str, str]:
    versions = {}
    for line in (repo_root() / "hack" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions
