"""Desired child objects of an InferenceService whose replicas each fit on one node."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from inferfleet.api import API_VERSION, KIND, EngineKind, InferenceServiceSpec, ShardPlan
from inferfleet.planning.drain import termination_grace_seconds
from inferfleet.planning.engines import MODEL_CACHE_DIR, build_engine_container, build_engine_volumes
from inferfleet.planning.names import GPU_PRODUCT_LABEL, ZONE_LABEL, child_labels, selector_labels
from inferfleet.planning.weights_naming import (
    CACHE_CLAIM,
    CACHE_UID,
    CURRENT_MODEL,
    MODEL_FLAGS,
    PUBLISHED_MARKER,
    WAIT_CONTAINER,
    WEIGHTS_MOUNT,
    WEIGHTS_VOLUME,
    compute_cache_key,
    compute_cacheable,
    compute_ref_file,
)
from inferfleet.planning.weights_nodes import build_warm_affinity

# Model loads take minutes; a rollout is only stuck after far longer than a web app's.
PROGRESS_DEADLINE_SECONDS = 1800


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Owner, spec: InferenceServiceSpec, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or owner.name,
        "namespace": owner.namespace,
        "labels": child_labels(owner.name, spec.engine.kind.value),
        "ownerReferences": [owner_reference(owner)],
    }


def build_pod_spec(spec: InferenceServiceSpec, shards: ShardPlan, service: str) -> dict[str, Any]:
    """The pod of one replica (or of one rank of a multi-node replica)."""
    scheduling = spec.scheduling
    pod: dict[str, Any] = {
        "containers": [build_engine_container(spec, shards)],
        "volumes": build_engine_volumes(spec, shards),
        "tolerations": [
            {"key": spec.accelerator.resource_name, "operator": "Exists", "effect": "NoSchedule"},
            *(t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in scheduling.tolerations),
        ],
        "terminationGracePeriodSeconds": termination_grace_seconds(
            spec.engine.kind, spec.engine.drain_seconds
        ),
        # Spread replicas over zones for availability, without refusing to run when one zone is full.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": ZONE_LABEL,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(service)},
            }
        ],
        "enableServiceLinks": False,
        # Engines never call the Kubernetes API: a token in the pod would only be something to steal.
        "automountServiceAccountToken": False,
    }
    node_selector = dict(scheduling.node_selector)
    if spec.accelerator.product:
        node_selector[GPU_PRODUCT_LABEL] = spec.accelerator.product
    if node_selector:
        pod["nodeSelector"] = node_selector
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    return pod


def build_deployment(
    owner: Owner, spec: InferenceServiceSpec, shards: ShardPlan, scheduler_name: str | None = None
) -> dict[str, Any]:
    """One pod per replica, placed by the kube-scheduler (`scheduler_name` picks a profile, e.g. one
    that bin-packs GPUs with NodeResourcesFit MostAllocated; None: the cluster's default)."""
    pod = build_pod_spec(spec, shards, owner.name)
    if scheduler_name:
        pod["schedulerName"] = scheduler_name
    labels = child_labels(owner.name, spec.engine.kind.value)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, spec),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner.name)},
            # No surge: a surge pod needs spare GPUs, which a full cluster does not have.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": labels},
                "spec": pod,
            },
        },
    }


def build_service(owner: Owner, spec: InferenceServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, spec),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": "http", "port": spec.engine.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pdb(owner: Owner, spec: InferenceServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, spec),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(owner.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def endpoint_url(owner: Owner, spec: InferenceServiceSpec, gateway_url: str | None = None) -> str:
    """The service's OpenAI base URL: through the gateway when one serves it, else its own Service."""
    if gateway_url:
        return f"{gateway_url.rstrip('/')}/namespaces/{owner.namespace}/services/{owner.name}/v1"
    return f"http://{owner.name}.{owner.namespace}.svc:{spec.engine.port}/v1"


_WAIT_SCRIPT = f"""\
ref="$1/refs/$2"
until [ -s "$ref" ] && rev=$(cat "$ref") && [ -f "$1/$rev/{PUBLISHED_MARKER}" ]; do sleep 2; done
ln -sfn "weights/$rev" "$3"
"""


def _wait_container(image: str, source: str) -> dict[str, Any]:
    """Waits for the node's fetch to publish the model, then points CURRENT_MODEL at it (the
    revision is the node's own: a branch fetched on two nodes at two times may differ)."""
    return {
        "name": WAIT_CONTAINER,
        "image": image,
        "command": ["sh", "-c", _WAIT_SCRIPT, "wait", WEIGHTS_MOUNT, compute_ref_file(source), CURRENT_MODEL],
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
            {
                "name": WEIGHTS_VOLUME,
                "mountPath": WEIGHTS_MOUNT,
                "subPath": compute_cache_key(source),
                "readOnly": True,
            },
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": CACHE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def build_cached_pod(
    pod: dict[str, Any], spec: InferenceServiceSpec, image: str, namespace: str | None = None
) -> dict[str, Any]:
    """`pod` reading its weights from the node cache, read-only (the namespace's cache claim,
    the model's directory as subPath), after the wait container saw them published there. The
    engine is told CURRENT_MODEL; a custom engine finds the model there. With `namespace`, the pod
    also prefers nodes labelled as holding that namespace's copy (a soft preference; replica
    groups are pinned to planned nodes instead). Sources the cache does not fetch (pvc://, oci://,
    gs://) keep the pod as it is."""
    source = spec.model.source
    if not compute_cacheable(source):
        return pod
    pod = copy.deepcopy(pod)
    if namespace is not None and "affinity" not in pod:
        pod["affinity"] = build_warm_affinity(namespace, source)
    wait = _wait_container(image, source)
    pod["initContainers"] = [wait, *pod.get("initContainers", [])]
    pod["volumes"].append(
        {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": CACHE_CLAIM, "readOnly": True}}
    )
    engine = pod["containers"][0]
    engine["volumeMounts"].append(wait["volumeMounts"][1])
    args = engine.get("args") or []
    flag = next((i for i, a in enumerate(args) if a in MODEL_FLAGS), None)
    if spec.engine.kind != EngineKind.CUSTOM and flag is not None and flag + 1 < len(args):
        engine["args"] = [*args[: flag + 1], CURRENT_MODEL, *args[flag + 2 :]]
    return pod


def build_cached_template(obj: dict[str, Any], spec: InferenceServiceSpec, image: str) -> dict[str, Any]:
    """A Deployment or StatefulSet whose pods read their weights from the node cache."""
    if obj.get("kind") not in ("Deployment", "StatefulSet"):
        return obj
    template = obj["spec"]["template"]
    namespace = obj["metadata"]["namespace"] if obj["kind"] == "Deployment" else None
    cached = build_cached_pod(template["spec"], spec, image, namespace)
    return {**obj, "spec": {**obj["spec"], "template": {**template, "spec": cached}}}
