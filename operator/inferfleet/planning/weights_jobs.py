"""The node weights cache's Jobs, built: fetch Jobs that run in the namespace (so they may use
its token Secrets) and mount its cache claim read-write, metadata Jobs that read a model's facts
without its weights, and the Jobs in the operator's own namespace that make and remove each node's
directory (a `local` volume's path must exist; the tenant's namespace may forbid hostPath); also
the cache's settings and the tolerations a Job on an engine's node needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.names import HOSTNAME_LABEL
from inferfleet.planning.weights_naming import (
    ACTION_LABEL,
    ATTEMPT_ANNOTATION,
    CACHE_CLAIM,
    CACHE_LABEL,
    CACHE_UID,
    FETCH_MOUNT,
    METADATA_ACTION,
    MODEL_LABEL,
    NODE_ANNOTATION,
    PERMANENT_EXIT_CODES,
    SOURCE_ANNOTATION,
    cleanup_job_name,
    compute_model_id,
    compute_volume_path,
    directory_job_name,
    fetch_job_name,
    metadata_job_name,
)

FETCH_BACKOFF_LIMIT = 3
SCRATCH_MOUNT = "/scratch"
"""The metadata Job's emptyDir: its temporary directory and huggingface_hub's home."""
METADATA_DEADLINE_SECONDS = 600
"""A metadata read takes seconds; a source that hangs fails the Job (and it is retried) after this."""
METADATA_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
SOURCE_ENV = {
    "hf": ("HF_TOKEN", "HF_ENDPOINT"),
    "s3": (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    ),
}  # fmt: skip
"""The engine env a fetch Job takes over, by scheme: the same Secrets the engine would read."""


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


CLEANUP_TTL_SECONDS = 86400
"""A directory-removal Job deletes itself this long after it finished (nothing reads it)."""


def build_cleanup_job(settings: CacheSettings, namespace: str, claim_uid: str, node: str) -> dict[str, Any]:
    """Removes a deleted claim's directory `<root>/<namespace>.<claim uid>` from `node`, in the
    operator's namespace (the root by hostPath, as the directory Job that made it). It tolerates
    every taint: whatever keeps engine pods off the node now, the files must go."""
    path = compute_volume_path(settings.root, namespace, claim_uid)
    return _root_job(
        settings,
        cleanup_job_name(claim_uid, node),
        node,
        [{"operator": "Exists"}],
        _RootCommand(
            cache_label="cleanup",
            container="remove",
            command=["rm", "-rf", "--one-file-system", "--", path],
            root_type="Directory",
        ),
        ttl_seconds=CLEANUP_TTL_SECONDS,
    )


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
    command = ["sh", "-c", 'mkdir -p "$1" && chmod 0755 "$1"', "mkdir", path]
    return _root_job(
        settings,
        directory_job_name(claim_uid, node),
        node,
        tolerations,
        _RootCommand(
            cache_label="directory", container="mkdir", command=command, root_type="DirectoryOrCreate"
        ),
    )


class _RootCommand(NamedTuple):
    """What a Job on the cache root does: its `CACHE_LABEL` value (the directory Jobs' index
    selects on it), its container and command, and the hostPath type the root must have."""

    cache_label: str
    container: str
    command: list[str]
    root_type: str


def _root_job(
    settings: CacheSettings,
    name: str,
    node: str,
    tolerations: Sequence[Mapping[str, Any]],
    run: _RootCommand,
    ttl_seconds: int | None = None,
) -> dict[str, Any]:
    """A Job in the operator's namespace that runs `run` on `node` with the cache root mounted
    by hostPath: the only pods that see every namespace's directory."""
    container = {
        "name": run.container,
        "image": settings.image,
        "command": run.command,
        "volumeMounts": [{"name": "root", "mountPath": settings.root}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod = {
        **_on_node(node, tolerations),
        "containers": [container],
        "volumes": [{"name": "root", "hostPath": {"path": settings.root, "type": run.root_type}}],
    }
    labels = {CACHE_LABEL: run.cache_label}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {NODE_ANNOTATION: node},
        },
        "spec": {
            "backoffLimit": FETCH_BACKOFF_LIMIT,
            **({"ttlSecondsAfterFinished": ttl_seconds} if ttl_seconds is not None else {}),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def compute_tolerations(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    """The engine pods' tolerations: a Job on the engine's node must be let on it too."""
    return [
        {"key": spec.accelerator.resource_name, "operator": "Exists", "effect": "NoSchedule"},
        *(t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations),
    ]
