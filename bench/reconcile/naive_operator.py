"""The naive baseline: a minimal kopf operator that LISTs the cluster on every reconcile.

It plans with inferfleet's pure planner (the same children, the same status), but observes the
way many first operators do: each reconcile LISTs every node and every pod cluster-wide (no
indexes, no watch-driven cache), server-side applies all children (field manager "naive") and
writes status, whether anything changed or not. Triggers: the InferenceService's create/resume,
and every event of a Deployment it owns (the owner is read with a GET). No autoscaler.

    python -m bench.reconcile.naive_operator --kubeconfig FILE --liveness URL --metrics-port PORT
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from prometheus_client import Counter, start_http_server
from pydantic import ValidationError

from inferfleet.api import GROUP, PLURAL, VERSION, InferenceServiceSpec
from inferfleet.planning.children import Owner, endpoint_url
from inferfleet.planning.inventory import GpuNode, build_gpu_node, summarize_products
from inferfleet.planning.names import SERVICE_LABEL, selector_string
from inferfleet.planning.observed import pod_gpus
from inferfleet.planning.placement import BoundPod
from inferfleet.planning.service import GroupInputs, ServicePlan, plan_service
from inferfleet.planning.status import (
    Observation,
    ObservedDeployment,
    compute_status,
    pod_placement_status,
)

FIELD_MANAGER = "naive"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
RECONCILES = Counter("naive_reconcile_total", "Reconciles of InferenceServices by the naive operator.")


# --- pure: observe from LIST results, plan, status -------------------------------------------------


@dataclass(frozen=True)
class ClusterSnapshot:
    """What one reconcile's LISTs of every node and every pod show."""

    gpu_nodes: tuple[GpuNode, ...]
    bound: tuple[BoundPod, ...]
    engine_pods: Mapping[tuple[str, str], tuple[tuple[str, str], ...]]
    """(namespace, service) -> (pod, node) of its bound engine pods that are not being deleted."""


def observe(nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> ClusterSnapshot:
    gpu_nodes = tuple(n for n in (build_gpu_node(node) for node in nodes) if n is not None)
    bound: list[BoundPod] = []
    engine: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if gpus := pod_gpus(spec):
            bound.append(BoundPod(node=node, gpus=gpus))
        service = (meta.get("labels") or {}).get(SERVICE_LABEL)
        if service and not meta.get("deletionTimestamp"):
            engine.setdefault((meta.get("namespace", ""), service), []).append((meta["name"], node))
    return ClusterSnapshot(gpu_nodes, tuple(bound), {k: tuple(v) for k, v in engine.items()})


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def plan(body: Mapping[str, Any], snapshot: ClusterSnapshot) -> ServicePlan:
    """inferfleet's plan for the service, from a snapshot instead of indexes (raises on invalid specs)."""
    spec = InferenceServiceSpec.model_validate(dict(body["spec"]))
    inputs = GroupInputs(gpu_nodes=snapshot.gpu_nodes, bound=snapshot.bound)
    return plan_service(owner_of(body), spec, summarize_products(snapshot.gpu_nodes, spec.scheduling), inputs)


def desired_status(
    body: Mapping[str, Any],
    service_plan: ServicePlan,
    deployment: Mapping[str, Any] | None,
    snapshot: ClusterSnapshot,
    now: datetime,
) -> dict[str, Any]:
    owner = owner_of(body)
    spec = InferenceServiceSpec.model_validate(dict(body["spec"]))
    topology = spec.sharding.topology_key
    domains = {n.name: n.labels.get(topology, "") for n in snapshot.gpu_nodes}
    observation = Observation(
        generation=int(body["metadata"].get("generation") or 0),
        desired_replicas=spec.replicas,
        selector=selector_string(owner.name),
        endpoint=endpoint_url(owner, spec),
        blocked=service_plan.blocked,
        shard_plan=service_plan.shard_plan,
        deployment=ObservedDeployment.from_object(deployment) if deployment is not None else None,
        placement=pod_placement_status(snapshot.engine_pods.get((owner.namespace, owner.name), ()), domains),
    )
    return compute_status(observation, dict(body.get("status") or {}), now)


# --- IO ------------------------------------------------------------------------------------------


def list_items(call: Callable[..., Any]) -> list[dict[str, Any]]:
    """One LIST, decoded as plain JSON (not the client's model objects, which cost far more)."""
    response = call(_preload_content=False)
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def apply(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    patchers: dict[str, Callable[..., Any]] = {
        "Deployment": client.AppsV1Api(api).patch_namespaced_deployment,
        "Service": client.CoreV1Api(api).patch_namespaced_service,
        "PodDisruptionBudget": client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget,
        "StatefulSet": client.AppsV1Api(api).patch_namespaced_stateful_set,
    }
    meta = obj["metadata"]
    result = patchers[obj["kind"]](
        meta["name"], meta["namespace"], obj, field_manager=FIELD_MANAGER, force=True,
        _content_type=APPLY_PATCH, _preload_content=False,
    )  # fmt: skip
    applied: dict[str, Any] = json.loads(result.data)
    return applied


def reconcile(api: client.ApiClient, body: Mapping[str, Any]) -> None:
    RECONCILES.inc()
    core = client.CoreV1Api(api)
    snapshot = observe(list_items(core.list_node), list_items(core.list_pod_for_all_namespaces))
    try:
        service_plan = plan(body, snapshot)
    except ValidationError as e:
        raise kopf.PermanentError(f"invalid spec: {e}") from e
    deployment = None
    for obj in service_plan.children:
        applied = apply(api, obj)
        if applied["kind"] == "Deployment":
            deployment = applied
    status = desired_status(body, service_plan, deployment, snapshot, datetime.now(UTC))
    meta = body["metadata"]
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}, _content_type=MERGE_PATCH
    )


@kopf.on.login()
def on_login(**kwargs: Any) -> Any:
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.probe(id="version")
def probe_version(**_: Any) -> str:
    """The harness's liveness check wants a version probe: kopf's, not any server on the port."""
    return "naive"


@kopf.on.startup()
def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.execution.max_workers = 8  # as inferfleet's default --workers
    memo.api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
def on_service(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile(memo.api, dict(body))


@kopf.on.event("apps", "v1", "deployments", labels={SERVICE_LABEL: kopf.PRESENT})
def on_deployment(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    assert namespace is not None  # Deployments are namespaced
    try:
        body = client.CustomObjectsApi(memo.api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, labels[SERVICE_LABEL]
        )
    except ApiException as e:
        if e.status == 404:
            return
        raise
    if not body["metadata"].get("deletionTimestamp"):
        reconcile(memo.api, body)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile.naive_operator", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--liveness", required=True, help="e.g. http://127.0.0.1:8080/healthz")
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    os.environ["KUBECONFIG"] = args.kubeconfig
    start_http_server(args.metrics_port, addr="127.0.0.1")
    kopf.configure(verbose=args.verbose)
    kopf.run(clusterwide=True, standalone=True, liveness_endpoint=args.liveness)


if __name__ == "__main__":
    main()
