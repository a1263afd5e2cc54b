"""The node weights cache's names: the labels, annotations, mounts and exit codes its objects
share, and the pure functions that name a model's directory under the cache root, the
namespace's volume and its path `<root>/<namespace>.<claim uid>`, each fetch, metadata, eviction,
directory and cleanup Job, and the node label saying a node holds a model (a hash where a URI
cannot go). What the cache is: planning/weights_cache.py."""

from __future__ import annotations

import hashlib
import re

CACHE_CLAIM = "inferfleet-model-cache"
CACHE_LABEL = "inferfleet.io/model-cache"
"""On the cache's objects: `volume` (PV and PVC), `fetch` (Jobs and their pods), `directory` and
`cleanup` (the Jobs that make and remove a namespace's directory on a node)."""
MODEL_LABEL = "inferfleet.io/weights-model"
"""On fetch Jobs: a short hash of the model source (label values cannot hold a URI)."""
ACTION_LABEL = "inferfleet.io/weights-action"
"""`evict` on the Job (and its pod) that removes a model from one node's cache; `metadata` on the
Job that reads a model's facts (config.json, safetensors headers) without its weights."""
METADATA_ACTION = "metadata"
WARM_LABEL_PREFIX = "weights.inferfleet.io/"
"""Node labels `weights.inferfleet.io/<hash of namespace and source>`: the node's cache holds that
namespace's copy of the model. Only the operator sets them; engine pods prefer such nodes."""
NODE_ANNOTATION = "inferfleet.io/weights-node"
SOURCE_ANNOTATION = "inferfleet.io/weights-source"
ATTEMPT_ANNOTATION = "inferfleet.io/weights-attempt"
"""On a fetch or metadata Job: which attempt it is (a failed one is retried as the next, a new Job)."""

FETCH_MOUNT = "/cache"
WEIGHTS_MOUNT = "/models/weights"
CURRENT_MODEL = "/models/current"
"""A link the engine pod's init container points at the published revision on its node."""
WAIT_CONTAINER = "wait-for-weights"
WEIGHTS_VOLUME = "model-weights"
PUBLISHED_MARKER = ".inferfleet-published.json"  # as inferfleet.weights.cache writes it
CACHE_UID = 65532
"""The fetch's user and group: fsGroup makes the cache directory writable to it, without root."""
PERMANENT_EXIT_CODES = frozenset({2, 4, 5})
"""`fetch-model` exit codes of the same: 2 bad or unsupported URI or option, 4 not enough space,
5 not found or no access (the Job's podFailurePolicy then ends it without more pods)."""
CACHEABLE_SCHEMES = ("hf", "s3")
MODEL_FLAGS = ("--model", "--model-path", "--model-id")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REF_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


def compute_cacheable(source: str) -> bool:
    return source.partition("://")[0] in CACHEABLE_SCHEMES


def _location(source: str) -> tuple[str, str, str | None]:
    scheme, _, rest = source.partition("://")
    if scheme == "hf":
        repo, _, ref = rest.partition("@")
        return scheme, repo, ref or None
    return scheme, rest.rstrip("/"), None


def compute_cache_key(source: str) -> str:
    """The model's directory name under the cache root: readable, and unique per source (the hash
    tells `s3://b/a--b` from `s3://b/a/b`); the revision is a level below. The fetcher uses it too
    (inferfleet.weights.sources.build_cache_key)."""
    scheme, location, _ = _location(source)
    readable = _SAFE.sub("-", location.replace("/", "--")).strip("-.")[:80]
    digest = hashlib.sha256(f"{scheme}://{location}".encode()).hexdigest()[:10]
    return f"{scheme}--{readable}--{digest}"


def compute_ref_file(source: str) -> str:
    """The file under the model's `refs/` naming the revision fetched for this source."""
    scheme, _, ref = _location(source)
    name = ref or ("main" if scheme == "hf" else "latest")
    if _REF_SAFE.match(name):
        return name
    return "".join(c if _REF_SAFE.match(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in name)


def _digest(*parts: str, size: int = 10) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:size]


def compute_model_id(source: str) -> str:
    return _digest(source, size=16)


def compute_volume_name(claim_uid: str) -> str:
    return f"inferfleet-cache-{claim_uid}"


def compute_volume_path(root: str, namespace: str, claim_uid: str) -> str:
    """Per namespace and per claim: a namespace deleted and made again (perhaps by someone else)
    gets a new claim, so a new directory, and never sees the old one's private weights."""
    return f"{root.rstrip('/')}/{namespace}.{claim_uid}"


def _attempt_suffix(attempt: int) -> str:
    return f"-{attempt}" if attempt > 1 else ""


def fetch_job_name(namespace: str, source: str, node: str, attempt: int = 1) -> str:
    """One per (namespace, source, node); a retry is a new Job, its attempt number appended."""
    return f"inferfleet-fetch-{_digest(namespace, source, node)}{_attempt_suffix(attempt)}"


def metadata_job_name(namespace: str, source: str, attempt: int = 1) -> str:
    return f"inferfleet-metadata-{_digest(namespace, source)}{_attempt_suffix(attempt)}"


def evict_job_name(namespace: str, source: str, node: str) -> str:
    return f"inferfleet-evict-{_digest(namespace, source, node)}"


def compute_warm_label(namespace: str, source: str) -> str:
    """The node label saying the node holds `namespace`'s copy of `source` (a hash: label keys
    cannot hold a URI, and node readers need not learn a tenant's model names)."""
    return f"{WARM_LABEL_PREFIX}{_digest(namespace, source, size=16)}"


def directory_job_name(claim_uid: str, node: str) -> str:
    return f"inferfleet-cachedir-{_digest(claim_uid, node)}"


def cleanup_job_name(claim_uid: str, node: str) -> str:
    return f"inferfleet-cacherm-{_digest(claim_uid, node)}"
