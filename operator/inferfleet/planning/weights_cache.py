"""The node weights cache, decided: which volume, claim and Jobs a service needs on which nodes,
how its engine pods mount the cache, and each node's state from the observed Jobs.

One cache per namespace on each node (docs/weights.md says why): a `local` PersistentVolume at
`<root>/<namespace>.<claim uid>` whose node affinity is every node, pre-bound to the claim
`inferfleet-model-cache` in the namespace. Fetch Jobs run in the namespace (so they may use its
token Secrets) and mount the claim read-write; engine pods mount it read-only. The directory on
each node is made by a small Job in the operator's own namespace (a `local` volume's path must
exist; the tenant's namespace may forbid hostPath).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.limits import MAX_WEIGHTS_NODES
from inferfleet.api.status import NodeWeights, WeightsReason, WeightsState
from inferfleet.planning.conditions import bound_message, find_true_condition
from inferfleet.planning.model_files import MetadataFetch, ModelFacts, parse_facts_record
from inferfleet.planning.names import SERVICE_LABEL

CACHE_CLAIM = "inferfleet-model-cache"
CACHE_LABEL = "inferfleet.io/model-cache"
"""On the cache's objects: `volume` (PV and PVC), `fetch` (Jobs and their pods), `directory`."""
MODEL_LABEL = "inferfleet.io/weights-model"
"""On fetch Jobs: a short hash of the model source (label values cannot hold a URI)."""
ACTION_LABEL = "inferfleet.io/weights-action"
"""`evict` on the Job (and its pod) that removes a model from one node's cache; `metadata` on the
Job that reads a model's facts (config.json, safetensors headers) without its weights."""
METADATA_ACTION = "metadata"
WARM_LABEL_PREFIX = "weights.inferfleet.io/"
"""Node labels `weights.inferfleet.io/<hash of namespace and source>`: the node's cache holds that
namespace's copy of the model. Only the operator sets them; engine pods prefer such nodes."""
WARM_PREFERENCE_WEIGHT = 100
NODE_ANNOTATION = "inferfleet.io/weights-node"
SOURCE_ANNOTATION = "inferfleet.io/weights-source"
ATTEMPT_ANNOTATION = "inferfleet.io/weights-attempt"
"""On a fetch or metadata Job: which attempt it is (a failed one is retried as the next, a new Job)."""
HOSTNAME_LABEL = "kubernetes.io/hostname"

FETCH_MOUNT = "/cache"
WEIGHTS_MOUNT = "/models/weights"
CURRENT_MODEL = "/models/current"
"""A link the engine pod's init container points at the published revision on its node."""
WAIT_CONTAINER = "wait-for-weights"
WEIGHTS_VOLUME = "model-weights"
PUBLISHED_MARKER = ".inferfleet-published.json"  # as inferfleet.weights.cache writes it
CACHE_UID = 65532
"""The fetch's user and group: fsGroup makes the cache directory writable to it, without root."""
FETCH_BACKOFF_LIMIT = 3
SCRATCH_MOUNT = "/scratch"
"""The metadata Job's emptyDir: its temporary directory and huggingface_hub's home."""
METADATA_DEADLINE_SECONDS = 600
"""A metadata read takes seconds; a source that hangs fails the Job (and it is retried) after this."""
METADATA_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 600.0
PERMANENT_ERRORS = frozenset(
    {"NotFound", "Unsupported", "BadSource", "BadOptions", "BadEndpoint", "BadListing", "BadHeader",
     "InsufficientSpace"}
)  # fmt: skip
"""Errors of `fetch-model` (its JSON `error`) that a rerun cannot heal: the source said 401/403/404
(hf: RepositoryNotFound, Gated, RevisionNotFound; S3: NoSuchBucket, AccessDenied, no objects), the
URI, options or listing are wrong, a header is broken, the node's disk is too small for the model.
Everything else (SourceUnavailable, Incomplete, ChecksumMismatch, a pod killed before it wrote a
result) is retried."""
PERMANENT_EXIT_CODES = frozenset({2, 4, 5})
"""`fetch-model` exit codes of the same: 2 bad or unsupported URI or option, 4 not enough space,
5 not found or no access (the Job's podFailurePolicy then ends it without more pods)."""
CACHEABLE_SCHEMES = ("hf", "s3")
SOURCE_ENV = {
    "hf": ("HF_TOKEN", "HF_ENDPOINT"),
    "s3": (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    ),
}  # fmt: skip
"""The engine env a fetch Job takes over, by scheme: the same Secrets the engine would read."""
MODEL_FLAGS = ("--model", "--model-path", "--model-id")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REF_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


@dataclass(frozen=True)
class CacheSettings:
    root: str
    """The cache root on every node (an absolute path)."""
    image: str
    """The image with `inferfleet` (the operator's): fetch Jobs, directory Jobs, the wait."""
    namespace: str
    """The operator's namespace, where directory Jobs (hostPath) run."""
    node_budget_bytes: int | None = None
    """Bytes of weights each node's cache may hold (all namespaces); beyond, the least recently
    used weights no pod uses are evicted. None: no budget."""


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


def compute_warm_nodes(fetches: Iterable[ObservedFetch], source: str) -> frozenset[str]:
    """Nodes whose cache holds `source` (a completed fetch, not an eviction): where a new replica
    group starts warm, a tie-breaker for its placement."""
    return frozenset(
        f.node for f in fetches if f.source == source and f.state == WeightsState.PRESENT and not f.evict
    )


def compute_fetched_facts(observed: CacheObserved, source: str) -> ModelFacts | None:
    """The model's facts a finished fetch of `source` reported from its files, if any did (the
    first such node's, by name: every node fetched the same revision of the same source), else
    those its metadata Job read."""
    results = observed.results or {}
    fetches = sorted(observed.fetches, key=lambda f: f.node)
    for fetch in [*fetches, *sorted(observed.metadata, key=lambda f: -f.attempt)]:
        result = results.get(fetch.name)
        if fetch.source == source and not fetch.evict and result is not None and result.model is not None:
            return result.model
    return None


def compute_warm_label(namespace: str, source: str) -> str:
    """The node label saying the node holds `namespace`'s copy of `source` (a hash: label keys
    cannot hold a URI, and node readers need not learn a tenant's model names)."""
    return f"{WARM_LABEL_PREFIX}{_digest(namespace, source, size=16)}"


def build_warm_affinity(namespace: str, source: str) -> dict[str, Any]:
    """A soft preference for nodes holding the weights: it never keeps a pod from scheduling, and
    the pod template names a label, not nodes, so a node turning warm changes no template."""
    term = {"matchExpressions": [{"key": compute_warm_label(namespace, source), "operator": "Exists"}]}
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": WARM_PREFERENCE_WEIGHT, "preference": term}
            ]
        }
    }


def directory_job_name(claim_uid: str, node: str) -> str:
    return f"inferfleet-cachedir-{_digest(claim_uid, node)}"


def build_cache_claim(namespace: str) -> dict[str, Any]:
    """The namespace's claim on its node caches; bound to its volume by name (volumeName), so no
    StorageClass and no provisioner take part."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CACHE_CLAIM, "namespace": namespace, "labels": {CACHE_LABEL: "volume"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def build_cache_volume(root: str, namespace: str, claim_uid: str) -> dict[str, Any]:
    """The namespace's `local` volume: the same path on every node, each node's own directory.

    Node affinity is every node (engine pods of one Deployment land on many nodes and share one
    claim). Retain: a local volume has no deleter, and no other claim can bind this volume; once
    its claim is gone, `plan_volume_cleanup` removes its directories and the volume."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": compute_volume_name(claim_uid), "labels": {CACHE_LABEL: "volume"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": CACHE_CLAIM,
                "uid": claim_uid,
            },
            "local": {"path": compute_volume_path(root, namespace, claim_uid)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "Exists"}]}
                    ]
                }
            },
        },
    }


def compute_volume_is_ours(volume: Mapping[str, Any], root: str) -> bool:
    """Whether a PersistentVolume is one this operator may create: a `local` path directly under
    the cache root, claimed by the cache claim of the namespace the path names."""
    spec = volume.get("spec") or {}
    path = str((spec.get("local") or {}).get("path") or "")
    claim = spec.get("claimRef") or {}
    namespace, uid = str(claim.get("namespace") or ""), str(claim.get("uid") or "")
    return (
        bool(namespace and uid)
        and set(spec) & {"hostPath", "nfs", "csi"} == set()
        and claim.get("name") == CACHE_CLAIM
        and path == compute_volume_path(root, namespace, uid)
        and "/" not in namespace + uid
        and ".." not in namespace + uid
        and volume.get("metadata", {}).get("name") == compute_volume_name(uid)
    )


CLEANUP_TTL_SECONDS = 86400
"""A directory-removal Job deletes itself this long after it finished (nothing reads it)."""


def cleanup_job_name(claim_uid: str, node: str) -> str:
    return f"inferfleet-cacherm-{_digest(claim_uid, node)}"


def build_cleanup_job(settings: CacheSettings, namespace: str, claim_uid: str, node: str) -> dict[str, Any]:
    """Removes a deleted claim's directory `<root>/<namespace>.<claim uid>` from `node`, in the
    operator's namespace (the root by hostPath, as the directory Job that made it). It tolerates
    every taint: whatever keeps engine pods off the node now, the files must go."""
    path = compute_volume_path(settings.root, namespace, claim_uid)
    container = {
        "name": "remove",
        "image": settings.image,
        "command": ["rm", "-rf", "--one-file-system", "--", path],
        "volumeMounts": [{"name": "root", "mountPath": settings.root}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod = {
        **_on_node(node, [{"operator": "Exists"}]),
        "containers": [container],
        "volumes": [{"name": "root", "hostPath": {"path": settings.root, "type": "Directory"}}],
    }
    labels = {CACHE_LABEL: "cleanup"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(claim_uid, node),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {NODE_ANNOTATION: node},
        },
        "spec": {
            "backoffLimit": FETCH_BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": CLEANUP_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


@dataclass(frozen=True)
class VolumeCleanup:
    """What goes once a cache volume's claim is gone: in this order."""

    cleanup_jobs: tuple[dict[str, Any], ...] = ()
    """One per node that has the claim's directory (its directory Job made it)."""
    directory_jobs: tuple[str, ...] = ()
    """The claim's directory Jobs (operator's namespace), replaced by the cleanup Jobs."""
    volume: str | None = None
    """The PersistentVolume to delete."""


def plan_volume_cleanup(
    settings: CacheSettings,
    volume: Mapping[str, Any],
    current_claim_uid: str | None,
    nodes: Iterable[str],
    directory_jobs: Iterable[str],
) -> VolumeCleanup:
    """A cache volume `Released` (its claim deleted: the namespace went, or someone deleted the
    claim) and ours (`compute_volume_is_ours`): remove its directory on each of `nodes` whose
    directory Job for the claim exists, those Jobs, then the volume. `current_claim_uid`: the
    uid of the namespace's cache claim now (a new one, or None); the claim the volume names must
    not be it. Anything else: nothing."""
    claim = (volume.get("spec") or {}).get("claimRef") or {}
    namespace, uid = str(claim.get("namespace") or ""), str(claim.get("uid") or "")
    released = (volume.get("status") or {}).get("phase") == "Released"
    if not released or uid == current_claim_uid or not compute_volume_is_ours(volume, settings.root):
        return VolumeCleanup()
    made = set(directory_jobs)
    holding = sorted(node for node in set(nodes) if directory_job_name(uid, node) in made)
    return VolumeCleanup(
        cleanup_jobs=tuple(build_cleanup_job(settings, namespace, uid, node) for node in holding),
        directory_jobs=tuple(directory_job_name(uid, node) for node in holding),
        volume=str(volume["metadata"]["name"]),
    )


def _restricted(container: dict[str, Any]) -> dict[str, Any]:
    """A container the `restricted` Pod Security Standard admits."""
    return {
        **container,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": CACHE_UID,
            "runAsGroup": CACHE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _on_node(node: str, tolerations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "nodeSelector": {HOSTNAME_LABEL: node},
        "tolerations": [dict(t) for t in tolerations],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }


def build_restricted_pod(
    node: str, tolerations: Sequence[Mapping[str, Any]], container: dict[str, Any]
) -> dict[str, Any]:
    """A pod on `node` running `container` with the namespace's cache claim mounted read-write as
    `cache`, admitted by the `restricted` Pod Security Standard."""
    return {
        **_on_node(node, tolerations),
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": CACHE_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_restricted(container)],
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}}],
    }


def _source_env(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    wanted = SOURCE_ENV.get(spec.model.source.partition("://")[0], ())
    return [
        e.model_dump(mode="json", by_alias=True, exclude_none=True)
        for e in spec.engine.env
        if e.name in wanted
    ]


def build_fetch_job(
    spec: InferenceServiceSpec,
    namespace: str,
    node: str,
    claim_uid: str,
    settings: CacheSettings,
    tolerations: Sequence[Mapping[str, Any]],
    attempt: int = 1,
) -> dict[str, Any]:
    """`inferfleet fetch-model` on `node` into the namespace's cache, with the engine's own
    source credentials (its env entries for the source, Secrets of this namespace)."""
    source = spec.model.source
    labels = {CACHE_LABEL: "fetch", MODEL_LABEL: compute_model_id(source)}
    container = {
        "name": "fetch",
        "image": settings.image,
        "args": [
            "fetch-model",
            source,
            "--cache-root",
            FETCH_MOUNT,
            "--termination-log",
            "/dev/termination-log",
        ],
        "env": _source_env(spec),
        "volumeMounts": [{"name": "cache", "mountPath": FETCH_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = build_restricted_pod(node, tolerations, container)
    annotations = {NODE_ANNOTATION: node, SOURCE_ANNOTATION: source, ATTEMPT_ANNOTATION: str(attempt)}
    name = fetch_job_name(namespace, source, node, attempt)
    return _claim_job(name, namespace, claim_uid, labels, annotations, {"template": {"spec": pod}})


def _claim_job(
    name: str,
    namespace: str,
    claim_uid: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    spec: dict[str, Any],
) -> dict[str, Any]:
    """A Job of the namespace's cache, owned by its claim: it goes with it (a Job outlives any one
    service)."""
    template = {**spec["template"], "metadata": {"labels": labels}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": CACHE_CLAIM, "uid": claim_uid}
            ],
        },
        "spec": {
            "backoffLimit": FETCH_BACKOFF_LIMIT,
            # A failure no rerun heals ends the Job at once, not after backoffLimit more pods.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": sorted(PERMANENT_EXIT_CODES)},
                    }
                ]
            },
            **spec,
            "template": template,
        },
    }


def build_metadata_job(
    spec: InferenceServiceSpec, namespace: str, claim_uid: str, settings: CacheSettings, attempt: int = 1
) -> dict[str, Any]:
    """`inferfleet fetch-model SOURCE --metadata-only`: the model's config.json, safetensors index
    and headers (ranged reads), never its weights, for a model whose size nobody knows yet. Any
    schedulable node: no node selector and no GPU toleration (GPU nodes are not needed, and are
    usually tainted: it lands on a CPU node), no cache volume (an emptyDir for its scratch), the
    engine's own source credentials, the `restricted` profile, small requests and a deadline."""
    source = spec.model.source
    labels = {CACHE_LABEL: "fetch", MODEL_LABEL: compute_model_id(source), ACTION_LABEL: METADATA_ACTION}
    scratch_env = [
        {"name": "TMPDIR", "value": SCRATCH_MOUNT},
        {"name": "HF_HOME", "value": f"{SCRATCH_MOUNT}/hf"},
    ]
    container = {
        "name": "metadata",
        "image": settings.image,
        "args": ["fetch-model", source, "--metadata-only", "--termination-log", "/dev/termination-log"],
        "env": [*_source_env(spec), *scratch_env],
        "resources": METADATA_RESOURCES,
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_restricted(container)],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    annotations = {SOURCE_ANNOTATION: source, ATTEMPT_ANNOTATION: str(attempt)}
    job_spec = {"activeDeadlineSeconds": METADATA_DEADLINE_SECONDS, "template": {"spec": pod}}
    name = metadata_job_name(namespace, source, attempt)
    return _claim_job(name, namespace, claim_uid, labels, annotations, job_spec)


def build_directory_job(
    settings: CacheSettings,
    namespace: str,
    claim_uid: str,
    node: str,
    tolerations: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Makes the namespace's directory under the cache root on `node`, in the operator's own
    namespace (the only pod with the root mounted, by hostPath)."""
    path = compute_volume_path(settings.root, namespace, claim_uid)
    container = {
        "name": "mkdir",
        "image": settings.image,
        "command": ["sh", "-c", 'mkdir -p "$1" && chmod 0755 "$1"', "mkdir", path],
        "volumeMounts": [{"name": "root", "mountPath": settings.root}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod = {
        **_on_node(node, tolerations),
        "containers": [container],
        "volumes": [{"name": "root", "hostPath": {"path": settings.root, "type": "DirectoryOrCreate"}}],
    }
    labels = {CACHE_LABEL: "directory"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": directory_job_name(claim_uid, node),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {NODE_ANNOTATION: node},
        },
        "spec": {
            "backoffLimit": FETCH_BACKOFF_LIMIT,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


@dataclass(frozen=True)
class ObservedFetch:
    """A fetch Job as watched (or a metadata Job: `node` empty)."""

    name: str
    node: str
    source: str
    state: WeightsState
    message: str | None = None
    evict: bool = False
    """An eviction Job (its state: Present once the files are gone)."""
    completed: str | None = None
    """When the Job completed (RFC 3339): a fetch's weights count as used then."""
    attempt: int = 1
    failed_at: str | None = None
    """When the Job failed (RFC 3339): its retry's backoff counts from then."""


@dataclass(frozen=True)
class FetchResult:
    """The JSON line a finished fetch pod left as its termination message."""

    bytes: int | None = None
    revision: str | None = None
    error: str | None = None
    message: str | None = None
    model: ModelFacts | None = None
    """The facts of the fetched files (config.json, safetensors index and headers)."""
    exit_code: int | None = None


def _attempt(annotations: Mapping[str, Any]) -> int:
    raw = str(annotations.get(ATTEMPT_ANNOTATION) or "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 10_000 else 1


def _observed_job(job: Mapping[str, Any], node: str, source: str) -> ObservedFetch:
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    evict = (meta.get("labels") or {}).get(ACTION_LABEL) == "evict"
    attempt = _attempt(meta.get("annotations") or {})
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    name = meta["name"]
    if "Complete" in conditions or (status.get("succeeded") or 0) > 0:
        completed = status.get("completionTime")
        return ObservedFetch(name, node, source, WeightsState.PRESENT, None, evict, completed, attempt)
    failed = conditions.get("Failed")
    if failed is not None:
        message = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}".rstrip(": ")
        when = failed.get("lastTransitionTime")
        return ObservedFetch(name, node, source, WeightsState.FAILED, message, evict, None, attempt, when)
    return ObservedFetch(name, node, source, WeightsState.FETCHING, None, evict, None, attempt)


def build_observed_fetch(job: Mapping[str, Any]) -> ObservedFetch | None:
    """A fetch or eviction Job (on a node); None for anything else, a metadata Job included."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    node, source = annotations.get(NODE_ANNOTATION), annotations.get(SOURCE_ANNOTATION)
    if not node or not source:
        return None
    return _observed_job(job, str(node), str(source))


def build_observed_metadata(job: Mapping[str, Any]) -> ObservedFetch | None:
    """A metadata Job (no node); None for anything else."""
    meta = job.get("metadata") or {}
    source = (meta.get("annotations") or {}).get(SOURCE_ANNOTATION)
    if (meta.get("labels") or {}).get(ACTION_LABEL) != METADATA_ACTION or not source:
        return None
    return _observed_job(job, "", str(source))


def build_fetch_result(pod_status: Mapping[str, Any]) -> FetchResult | None:
    """The fetch's JSON result from a terminated pod's status, None when it left none."""
    for container in pod_status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        try:
            data = json.loads(terminated.get("message") or "")
        except ValueError:
            continue
        if isinstance(data, dict):
            size, code = data.get("bytes"), terminated.get("exitCode")
            return FetchResult(
                bytes=size if isinstance(size, int) and size >= 0 else None,
                revision=str(data["revision"]) if data.get("revision") else None,
                error=str(data["error"]) if data.get("error") else None,
                message=str(data["message"]) if data.get("message") else None,
                model=parse_facts_record(data.get("model")),
                exit_code=code if isinstance(code, int) else None,
            )
    return None


@dataclass(frozen=True)
class CacheObserved:
    """The namespace's cache objects as watched."""

    claim_uid: str | None = None
    """The cache claim's uid; None: no claim yet."""
    volume_exists: bool = False
    directory_jobs: frozenset[str] = frozenset()
    """Names of the directory Jobs in the operator's namespace."""
    fetches: tuple[ObservedFetch, ...] = ()
    results: Mapping[str, FetchResult] | None = None
    """A fetch (or metadata) Job's result, by Job name, from its latest terminated pod."""
    metadata: tuple[ObservedFetch, ...] = ()
    """The namespace's metadata Jobs (`build_observed_metadata`)."""


@dataclass(frozen=True)
class WeightsPlan:
    """Objects to create, in this order; empty when the cache is off or the source is not cached."""

    claim: dict[str, Any] | None = None
    volume: dict[str, Any] | None = None
    directory_jobs: tuple[dict[str, Any], ...] = ()
    fetch_jobs: tuple[dict[str, Any], ...] = ()
    """Fetch and metadata Jobs: first attempts, and retries of failed ones."""
    delete_jobs: tuple[str, ...] = ()
    """Failed Jobs of the namespace a retry replaces (deleted once their retry is created)."""
    retry_at: datetime | None = None
    """When the next failed Job is due for its retry (look again then)."""


def compute_tolerations(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    """The engine pods' tolerations: a Job on the engine's node must be let on it too."""
    return [
        {"key": spec.accelerator.resource_name, "operator": "Exists", "effect": "NoSchedule"},
        *(t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations),
    ]


@dataclass(frozen=True)
class FetchRetry:
    """What follows a failed fetch or metadata Job."""

    attempt: int
    """The attempt that failed."""
    at: datetime | None
    """When the next attempt starts; None: not retried (a failure a rerun cannot heal)."""
    error: str | None = None
    """Why not: the fetch's error."""

    def describe(self) -> str:
        if self.at is None:
            return f"attempt {self.attempt} failed and is not retried ({self.error} does not heal by itself)"
        return f"attempt {self.attempt} failed; attempt {self.attempt + 1} at {_stamp(self.at)}"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def compute_retry_delay(attempt: int) -> float:
    """Seconds after the `attempt`-th failure before the next: 30 s doubling, at most 10 min."""
    doublings: int = min(max(0, attempt - 1), 32)
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * float(2**doublings))


def compute_fetch_retry(fetch: ObservedFetch, result: FetchResult | None, now: datetime) -> FetchRetry | None:
    """A failed fetch or metadata Job is retried after `compute_retry_delay` from its failure,
    unless its result says the failure does not heal (PERMANENT_ERRORS, PERMANENT_EXIT_CODES).
    A Job that left no result (killed, out of memory, past its deadline) is retried."""
    if fetch.state != WeightsState.FAILED or fetch.evict:
        return None
    if result is not None and (result.error in PERMANENT_ERRORS or result.exit_code in PERMANENT_EXIT_CODES):
        return FetchRetry(fetch.attempt, None, result.error or f"exit code {result.exit_code}")
    failed = _parse_stamp(fetch.failed_at) or now
    return FetchRetry(fetch.attempt, failed + timedelta(seconds=compute_retry_delay(fetch.attempt)))


def compute_current_fetches(fetches: Iterable[ObservedFetch]) -> dict[str, ObservedFetch]:
    """The latest attempt per node (a failed attempt its retry replaced may still be there)."""
    latest: dict[str, ObservedFetch] = {}
    for f in fetches:
        if f.node not in latest or f.attempt > latest[f.node].attempt:
            latest[f.node] = f
    return latest


@dataclass(frozen=True)
class _Retries:
    due: tuple[ObservedFetch, ...] = ()
    superseded: tuple[str, ...] = ()
    next_at: datetime | None = None


def _plan_retries(
    jobs: Sequence[ObservedFetch], wanted: Iterable[str], observed: CacheObserved, now: datetime | None
) -> _Retries:
    """Of `jobs` (one source's fetch Jobs, or its metadata Jobs under node ""), the latest attempts
    on `wanted` nodes that are due for a retry, the earlier attempts to delete, the next retry."""
    current = compute_current_fetches(jobs)
    superseded = tuple(sorted(f.name for f in jobs if current[f.node] is not f))
    if now is None:
        return _Retries(superseded=superseded)
    results = observed.results or {}
    due: list[tuple[ObservedFetch, datetime]] = []
    later: list[tuple[ObservedFetch, datetime]] = []
    for node in sorted(set(wanted) & set(current)):
        retry = compute_fetch_retry(current[node], results.get(current[node].name), now)
        if retry is None or retry.at is None:
            continue
        (due if retry.at <= now else later).append((current[node], retry.at))
    return _Retries(tuple(f for f, _ in due), superseded, min((at for _, at in later), default=None))


def plan_weights(
    settings: CacheSettings,
    spec: InferenceServiceSpec,
    namespace: str,
    nodes: Iterable[str],
    observed: CacheObserved,
    *,
    now: datetime | None = None,
    metadata: bool = False,
) -> WeightsPlan:
    """What the service's nodes lack: the claim first (the volume names its uid), then the volume,
    each node's directory and a fetch on each node without one for this source (one Job per
    namespace, source and node). A failed fetch is retried (`compute_fetch_retry`) as a new Job
    on a node the service still wants, and the failed one goes. `metadata`: the model's size is
    unknown, so a metadata Job reads its facts (one per namespace and source, retried alike)."""
    source = spec.model.source
    if not compute_cacheable(source):
        return WeightsPlan()
    uid = observed.claim_uid
    if uid is None:
        return WeightsPlan(claim=build_cache_claim(namespace))
    tolerations, wanted = compute_tolerations(spec), sorted(set(nodes))
    fetches = [f for f in observed.fetches if f.source == source and not f.evict]
    fetched = {f.node for f in fetches}
    retries = _plan_retries(fetches, wanted, observed, now)
    missing = [(node, 1) for node in wanted if node not in fetched]
    retried = [(f.node, f.attempt + 1) for f in retries.due]
    jobs = [build_fetch_job(spec, namespace, n, uid, settings, tolerations, a) for n, a in missing + retried]
    reads = [m for m in observed.metadata if m.source == source]
    meta = _plan_retries(reads, [""] if metadata else [], observed, now)
    if metadata and not reads:
        jobs.append(build_metadata_job(spec, namespace, uid, settings))
    jobs += [build_metadata_job(spec, namespace, uid, settings, m.attempt + 1) for m in meta.due]
    retry_at = min((at for at in (retries.next_at, meta.next_at) if at is not None), default=None)
    return WeightsPlan(
        volume=None if observed.volume_exists else build_cache_volume(settings.root, namespace, uid),
        directory_jobs=tuple(
            build_directory_job(settings, namespace, uid, node, tolerations)
            for node in wanted
            if directory_job_name(uid, node) not in observed.directory_jobs
        ),
        fetch_jobs=tuple(jobs),
        delete_jobs=(*retries.superseded, *meta.superseded, *(f.name for f in (*retries.due, *meta.due))),
        retry_at=retry_at,
    )


def compute_metadata_fetch(observed: CacheObserved, source: str, now: datetime) -> MetadataFetch:
    """Where reading `source`'s facts without its weights stands (the cache is on)."""
    current = compute_current_fetches(m for m in observed.metadata if m.source == source).get("")
    if current is None:
        return MetadataFetch()
    if current.state == WeightsState.PRESENT:
        return MetadataFetch(job=current.name, done=True)
    if current.state != WeightsState.FAILED:
        return MetadataFetch(job=current.name, attempt=current.attempt)
    result = (observed.results or {}).get(current.name)
    retry = compute_fetch_retry(current, result, now)
    error = f"{result.error or 'Failed'}: {result.message}" if result and result.message else current.message
    retry_text = retry.describe() if retry else None
    return MetadataFetch(current.name, current.attempt, error or "Failed", retry_text)


_ORDER = {WeightsState.FAILED: 0, WeightsState.EVICTING: 1, WeightsState.FETCHING: 1, WeightsState.PRESENT: 2}
_REASONS = {
    WeightsState.PRESENT: WeightsReason.FETCHED,
    WeightsState.FETCHING: WeightsReason.FETCH_RUNNING,
    WeightsState.FAILED: WeightsReason.FETCH_FAILED,
    WeightsState.EVICTING: WeightsReason.OVER_BUDGET,
}


def _node_weights(
    fetch: ObservedFetch,
    result: FetchResult | None,
    last_used: str | None,
    evicting: bool,
    prefetch: bool,
    retry: FetchRetry | None,
) -> NodeWeights:
    message = fetch.message
    if fetch.state == WeightsState.FAILED and result is not None and result.message:
        message = f"{result.error or 'Failed'}: {result.message}"
    if fetch.state == WeightsState.FAILED and retry is not None:
        message = f"{retry.describe()}: {message or 'Failed'}"  # first: a long error is cut at the end
    present = fetch.state == WeightsState.PRESENT and result is not None
    state = WeightsState.EVICTING if evicting and fetch.state == WeightsState.PRESENT else fetch.state
    return NodeWeights(
        node=fetch.node,
        state=state,
        reason=_REASONS[state],
        message=bound_message(message) if message and fetch.state == WeightsState.FAILED else None,
        bytes=result.bytes if present and result is not None else None,
        revision=result.revision if present and result is not None else None,
        job=fetch.name,
        last_used=last_used,
        prefetch=True if prefetch else None,
    )


def compute_node_weights(
    source: str,
    observed: CacheObserved,
    serving: Iterable[str],
    previous: Sequence[NodeWeights] | None,
    now: datetime,
    prefetch: Iterable[str] = (),
) -> list[NodeWeights] | None:
    """status.weights: each node's fetch of this source (its latest attempt); failed and fetching
    first, then the most recently used, at most MAX_WEIGHTS_NODES. `serving`: nodes the service's
    pods are on now; `prefetch`: nodes kept warm for it beyond those. A failed fetch on a node the
    service wants says which attempt failed and when the next starts (or why none will)."""
    ours = (f for f in observed.fetches if f.source == source and not f.evict)
    fetches = list(compute_current_fetches(ours).values())
    if not fetches:
        return None
    evicting = {f.node for f in observed.fetches if f.source == source and f.evict}
    used = {w.node: w.last_used for w in previous or []}
    used.update({node: _stamp(now) for node in serving})
    results, kept, wanted = observed.results or {}, set(prefetch) - set(serving), set(serving) | set(prefetch)
    entries = [
        _node_weights(
            f,
            results.get(f.name),
            used.get(f.node),
            f.node in evicting,
            f.node in kept,
            compute_fetch_retry(f, results.get(f.name), now) if f.node in wanted else None,
        )
        for f in fetches
    ]
    entries.sort(key=lambda w: (_ORDER[w.state], _negated(w.last_used), w.node))
    return entries[:MAX_WEIGHTS_NODES]


def _negated(stamp: str | None) -> str:
    """Sorts newer RFC 3339 stamps first (and none last)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in stamp) if stamp else "\U0010ffff"


def compute_weights_events(
    previous: Sequence[NodeWeights] | None, current: Sequence[NodeWeights] | None
) -> list[tuple[str, str, str]]:
    """A Warning per node whose fetch turned Failed."""
    before = {w.node: w.state for w in previous or []}
    return [
        (
            "Warning",
            WeightsReason.FETCH_FAILED,
            f"fetching the weights on node {w.node} failed: {w.message or ''}",
        )
        for w in current or []
        if w.state == WeightsState.FAILED and before.get(w.node) != WeightsState.FAILED
    ]


def compute_weights_wake(
    namespace: str,
    labels: Mapping[str, str],
    spec: Mapping[str, Any] | None,
    status: Mapping[str, Any] | None,
    deleted: bool = False,
) -> tuple[str, str] | None:
    """An engine pod of a cached model, bound to a node and not Ready yet (its wait may still be
    waiting): its service makes sure the node fetches the weights. Deleted: the weights it used
    on its node may be evicted now, so its service looks at that node again."""
    service = labels.get(SERVICE_LABEL)
    spec, status = spec or {}, status or {}
    if not service or not spec.get("nodeName"):
        return None
    if not any(c.get("name") == WAIT_CONTAINER for c in spec.get("initContainers") or []):
        return None
    done = find_true_condition(status.get("conditions"), "Ready") is not None
    return (namespace, str(service)) if deleted or not done else None


def compute_fetch_pod_wakes(
    namespace: str,
    labels: Mapping[str, str],
    status: Mapping[str, Any] | None,
    services: Mapping[tuple[str, str], Mapping[str, Any]],
) -> list[tuple[str, str]]:
    """A fetch pod that terminated (its result, the size, is in its status now; the Job's own
    event may have come first): the namespace's services of that model read it."""
    model = labels.get(MODEL_LABEL)
    if (
        labels.get(CACHE_LABEL) != "fetch"
        or not model
        or (status or {}).get("phase") not in ("Succeeded", "Failed")
    ):
        return []
    return sorted(
        key
        for key, body in services.items()
        if key[0] == namespace
        and compute_model_id(str(((body.get("spec") or {}).get("model") or {}).get("source"))) == model
    )
