"""The node weights cache on the real local control plane, the operator under the chart's RBAC
rendered with modelCache.root: the namespace's volume and claim, a fetch Job per node that the
kube-scheduler places through the volume's node affinity and KWOK completes, status.weights, and
engine pods that mount the cache read-only, in a namespace enforcing the restricted profile."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.weights_naming import (
    ACTION_LABEL,
    CACHE_CLAIM,
    CURRENT_MODEL,
    WAIT_CONTAINER,
    cleanup_job_name,
    compute_model_id,
    compute_volume_name,
    compute_volume_path,
    compute_warm_label,
    directory_job_name,
    evict_job_name,
    fetch_job_name,
)
from tests.conftest import Cluster
from tests.integration.test_reconcile import create, engine_pods, patch_spec, read, small_service, wait_ready
from tests.rbac import ChartIdentity, apply_chart_objects, delete_chart_objects, render_chart_rbac
from tests.support import (
    RESTRICTED_SECURITY_CONTEXT,
    restricted_namespace,
    status_condition,
    token_kubeconfig,
)

pytestmark = pytest.mark.usefixtures("crds_installed")

ROOT = "/var/lib/inferfleet/models"


@pytest.fixture
def cache_kubeconfig(cluster: Cluster, chart_identity: ChartIdentity, tmp_path: Path) -> Iterator[Path]:
    """The chart's cluster-wide RBAC with modelCache.root set, as its own release."""
    release = f"{chart_identity.namespace}-cache"
    docs = render_chart_rbac(release, chart_identity.namespace, sets=[f"modelCache.root={ROOT}"])
    apply_chart_objects(cluster.api_client, docs)
    [account] = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == release
    ]
    try:
        yield token_kubeconfig(
            cluster.core, cluster.kubeconfig, account, chart_identity.namespace, tmp_path / "cache.kubeconfig"
        )
    finally:
        delete_chart_objects(cluster.api_client, docs)


@pytest.fixture
def cached_operator(
    run_operator: Callable[..., OperatorProcess], cache_kubeconfig: Path, chart_identity: ChartIdentity
) -> Iterator[OperatorProcess]:
    args = [f"--model-cache-root={ROOT}", "--model-cache-image=ghcr.io/inferfleet/inferfleet:test",
            f"--model-cache-namespace={chart_identity.namespace}"]  # fmt: skip
    operator = run_operator(extra_args=args, kubeconfig=cache_kubeconfig)
    yield operator
    # Stopped before its RBAC goes (cache_kubeconfig's teardown runs before run_operator's): a
    # reconcile woken by the test namespace's deletion would otherwise be refused in between.
    operator.stop()


def restricted_service(name: str, replicas: int) -> dict[str, Any]:
    body = small_service(name)
    body["spec"]["engine"]["securityContext"] = RESTRICTED_SECURITY_CONTEXT
    body["spec"]["engine"]["env"] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    ]
    body["spec"]["replicas"] = replicas
    return body


def fetch_jobs(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    batch = client.BatchV1Api(cluster.api_client)
    jobs: list[client.V1Job] = batch.list_namespaced_job(
        namespace, label_selector="inferfleet.io/model-cache=fetch"
    ).items
    return jobs


def wait_weights_present(
    cluster: Cluster, namespace: str, name: str, nodes: set[str]
) -> list[dict[str, Any]]:
    def present() -> list[dict[str, Any]]:
        weights = read(cluster, namespace, name).get("status", {}).get("weights") or []
        assert {w["node"] for w in weights if w["state"] == "Present"} == nodes, weights
        return weights

    return wait_for(present, timeout=90, what=f"weights Present on {sorted(nodes)}")


def test_weights_are_fetched_once_per_node_and_mounted_read_only_in_a_restricted_namespace(
    cluster: Cluster, cached_operator: OperatorProcess, chart_identity: ChartIdentity
) -> None:
    namespace = restricted_namespace(cluster.core, "weights-cache")
    try:
        create(cluster, namespace, restricted_service("llama", replicas=3))
        wait_ready(cluster, namespace, "llama")
        nodes = {p.spec.node_name for p in engine_pods(cluster, namespace, "llama")}
        # One claim, bound to one `local` volume whose node affinity is every node: the
        # kube-scheduler's VolumeBinding lets one Deployment's pods use it on several nodes.
        assert len(nodes) >= 2, nodes
        weights = wait_weights_present(cluster, namespace, "llama", nodes)
        assert all(w["reason"] == "Fetched" and w["job"] for w in weights)

        claim = cluster.core.read_namespaced_persistent_volume_claim(CACHE_CLAIM, namespace)
        volume = cluster.core.read_persistent_volume(compute_volume_name(claim.metadata.uid))
        assert volume.spec.local.path == compute_volume_path(ROOT, namespace, claim.metadata.uid)
        assert (volume.spec.claim_ref.name, volume.spec.claim_ref.namespace) == (CACHE_CLAIM, namespace)
        assert claim.status.phase == "Bound"

        # One fetch per node however many replicas share it, each pinned to its node, with the
        # engine's token Secret and no hostPath (the namespace enforces `restricted`).
        jobs = fetch_jobs(cluster, namespace)
        assert sorted(j.metadata.annotations["inferfleet.io/weights-node"] for j in jobs) == sorted(nodes)
        for job in jobs:
            pod = job.spec.template.spec
            assert pod.node_selector == {
                "kubernetes.io/hostname": job.metadata.annotations["inferfleet.io/weights-node"]
            }
            assert [e.name for e in pod.containers[0].env] == ["HF_TOKEN"]
            assert job.status.succeeded == 1

        for pod in engine_pods(cluster, namespace, "llama"):
            [wait] = pod.spec.init_containers
            assert wait.name == WAIT_CONTAINER
            [cache] = [v for v in pod.spec.volumes if v.persistent_volume_claim]
            assert (cache.persistent_volume_claim.claim_name, cache.persistent_volume_claim.read_only) == (
                CACHE_CLAIM,
                True,
            )
            engine = pod.spec.containers[0]
            assert [m.read_only for m in engine.volume_mounts if m.name == cache.name] == [True]
            assert engine.args[engine.args.index("--model") + 1] == CURRENT_MODEL

        # The directories are made in the operator's namespace, one Job per node.
        dirs = (
            client.BatchV1Api(cluster.api_client)
            .list_namespaced_job(
                chart_identity.namespace, label_selector="inferfleet.io/model-cache=directory"
            )
            .items
        )
        assert {j.metadata.annotations["inferfleet.io/weights-node"] for j in dirs} >= nodes

        # More replicas on nodes that already hold the weights fetch nothing again.
        patch_spec(cluster, namespace, "llama", {"replicas": 4})
        wait_ready(cluster, namespace, "llama")
        after = {p.spec.node_name for p in engine_pods(cluster, namespace, "llama")}
        wait_weights_present(cluster, namespace, "llama", after)
        assert len(fetch_jobs(cluster, namespace)) == len(after)
    finally:
        cluster.core.delete_namespace(namespace)


def test_without_a_cache_root_nothing_changes(
    cluster: Cluster, run_operator: Callable[..., OperatorProcess], namespace: str
) -> None:
    run_operator(namespaces=[namespace])
    create(cluster, namespace, small_service("plain"))
    wait_ready(cluster, namespace, "plain")
    [pod] = engine_pods(cluster, namespace, "plain")
    assert not pod.spec.init_containers
    assert [v.name for v in pod.spec.volumes if v.persistent_volume_claim] == []
    assert {"name": "model-cache", "emptyDir": {}} in [
        cluster.api_client.sanitize_for_serialization(v) for v in pod.spec.volumes
    ]
    assert "weights" not in read(cluster, namespace, "plain")["status"]
    assert fetch_jobs(cluster, namespace) == []
    assert cluster.core.list_namespaced_persistent_volume_claim(namespace).items == []


BUDGET = 1000
"""Bytes per node in the eviction test: one 600-byte copy fits, two do not."""


@pytest.fixture
def budget_operator(
    run_operator: Callable[..., OperatorProcess], cache_kubeconfig: Path, chart_identity: ChartIdentity
) -> Iterator[OperatorProcess]:
    args = [f"--model-cache-root={ROOT}", "--model-cache-image=ghcr.io/inferfleet/inferfleet:test",
            f"--model-cache-namespace={chart_identity.namespace}",
            f"--model-cache-node-budget-bytes={BUDGET}"]  # fmt: skip
    operator = run_operator(extra_args=args, kubeconfig=cache_kubeconfig)
    yield operator
    operator.stop()  # before its RBAC goes, as cached_operator


def weights_of(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    weights: list[dict[str, Any]] = read(cluster, namespace, name).get("status", {}).get("weights") or []
    return weights


def node_labels(cluster: Cluster, node: str) -> dict[str, str]:
    return cluster.core.read_node(node).metadata.labels or {}


def test_prefetch_keeps_a_node_warm_and_a_scale_up_lands_on_it(
    cluster: Cluster, cached_operator: OperatorProcess
) -> None:
    namespace = restricted_namespace(cluster.core, "weights-warm")
    try:
        body = restricted_service("warm", replicas=0)
        body["spec"]["scaling"] = {"minReplicas": 0, "maxReplicas": 4}
        body["spec"]["model"]["cache"] = {"prefetchNodes": 1}
        create(cluster, namespace, body)
        source = body["spec"]["model"]["source"]
        label = compute_warm_label(namespace, source)

        def prefetched(serving: set[str]) -> str:
            weights = weights_of(cluster, namespace, "warm")
            [kept] = [w for w in weights if w.get("prefetch")]
            assert (kept["state"], kept["node"] in serving) == ("Present", False), weights
            assert label in node_labels(cluster, kept["node"]), "the warm node is labelled"
            return str(kept["node"])

        # No replica yet: one L4 node (of six, all alike) holds the weights, chosen by the operator.
        warm = wait_for(lambda: prefetched(set()), timeout=90, what="a prefetched node")
        assert [
            j.metadata.annotations["inferfleet.io/weights-node"] for j in fetch_jobs(cluster, namespace)
        ] == [warm]

        # The Deployment's pods prefer the labelled node: the first replica starts there.
        patch_spec(cluster, namespace, "warm", {"replicas": 1})
        wait_ready(cluster, namespace, "warm")
        [pod] = engine_pods(cluster, namespace, "warm")
        assert pod.spec.node_name == warm

        # Serving there now, it is no longer a prefetch: another node is kept warm beyond it.
        second = wait_for(lambda: prefetched({warm}), timeout=90, what="a second prefetched node")
        assert second != warm
        assert {w["node"] for w in weights_of(cluster, namespace, "warm")} == {warm, second}
    finally:
        cluster.core.delete_namespace(namespace)


def report_size(cluster: Cluster, namespace: str, job: str, size: int) -> None:
    report_result(cluster, namespace, job, {"bytes": size, "revision": "r1"})


def report_result(cluster: Cluster, namespace: str, job: str, result: dict[str, Any]) -> None:
    """What the fetch process writes as its termination message (KWOK runs no container): its
    JSON result line, as tests/unit/test_fetch_model.py proves the real fetch reports it."""
    [pod] = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    statuses = cluster.api_client.sanitize_for_serialization(pod.status.container_statuses)
    statuses[0]["state"]["terminated"]["message"] = json.dumps(result)
    cluster.core.patch_namespaced_pod_status(
        pod.metadata.name, namespace, {"status": {"containerStatuses": statuses}}
    )


# The facts `inferfleet fetch-model` reads from Llama-3.1-8B's config.json and safetensors files.
LLAMA_8B_FACTS = {
    "parameters": 8030261248,
    "dtype": "bfloat16",
    "modelType": "llama",
    "architecture": {
        "num_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
}


def test_the_facts_a_fetch_reports_from_the_models_files_become_status_model(
    cluster: Cluster, cached_operator: OperatorProcess
) -> None:
    namespace = restricted_namespace(cluster.core, "weights-facts")
    try:
        body = restricted_service("facts", replicas=1)
        for known in ("parametersBillions", "architecture"):
            body["spec"]["model"].pop(known, None)
        create(cluster, namespace, body)
        wait_ready(cluster, namespace, "facts")
        assert read(cluster, namespace, "facts")["status"]["model"]["source"] == "KnownModels"
        [job] = fetch_jobs(cluster, namespace)
        report_result(
            cluster,
            namespace,
            str(job.metadata.name),
            {"bytes": 1, "revision": "r1", "model": LLAMA_8B_FACTS},
        )

        def from_files() -> dict[str, Any]:
            model = read(cluster, namespace, "facts")["status"]["model"]
            assert model["source"] == "Files", model
            return dict(model)

        model = wait_for(from_files, timeout=60, what="status.model from the fetched files")
        assert (model["parameters"], model["dtype"], model["architecture"]["numLayers"]) == (
            8030261248,
            "bfloat16",
            32,
        )
        consistent = status_condition(read(cluster, namespace, "facts"), "ModelConsistent")
        assert consistent["status"] == "True"
    finally:
        cluster.core.delete_namespace(namespace)


def pinned_service(name: str, source: str, node: str) -> dict[str, Any]:
    body = restricted_service(name, replicas=1)
    body["spec"]["model"]["source"] = source
    body["spec"]["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": node}}
    body["spec"]["scaling"] = {"minReplicas": 0, "maxReplicas": 4}
    return body


def only_fetch_of(cluster: Cluster, namespace: str, source: str) -> str:
    [job] = [
        j
        for j in fetch_jobs(cluster, namespace)
        if j.metadata.annotations["inferfleet.io/weights-source"] == source
    ]
    return str(job.metadata.name)


def wait_size_seen(cluster: Cluster, namespace: str, name: str, size: int) -> None:
    wait_for(
        lambda: [w.get("bytes") for w in weights_of(cluster, namespace, name)] == [size],
        timeout=60,
        what=f"{name}'s weights size in status",
    )


def test_eviction_over_the_node_budget_spares_weights_in_use(
    cluster: Cluster, budget_operator: OperatorProcess
) -> None:
    namespace, node = restricted_namespace(cluster.core, "weights-evict"), "l4-c-1"
    first, second = "hf://acme/first", "hf://acme/second"
    evictions: set[str] = set()
    done = threading.Event()
    watcher = threading.Thread(target=record_evictions, args=(cluster, namespace, done, evictions))
    watcher.start()
    try:
        for name, source in (("first", first), ("second", second)):
            create(cluster, namespace, pinned_service(name, source, node))
            wait_ready(cluster, namespace, name)
            wait_weights_present(cluster, namespace, name, {node})
            report_size(cluster, namespace, only_fetch_of(cluster, namespace, source), 600)
            patch_spec(cluster, namespace, name, {"scaling": {"maxReplicas": 3}})  # a reconcile reads it
            wait_size_seen(cluster, namespace, name, 600)
        # 1200 bytes on a 1000-byte budget, but a pod uses each copy: nothing goes.
        assert evictions == set()
        assert {compute_warm_label(namespace, s) for s in (first, second)} <= set(node_labels(cluster, node))

        # Its pod gone, the first copy goes (both Jobs with it), the second stays.
        scale_to_zero_until_evicted(cluster, namespace, "first")
        assert evictions == {evict_job_name(namespace, first, node)}
        assert [w["node"] for w in weights_of(cluster, namespace, "second")] == [node]
        labels = node_labels(cluster, node)
        assert compute_warm_label(namespace, first) not in labels
        assert compute_warm_label(namespace, second) in labels

        # A replica back on the node fetches the model again.
        patch_spec(cluster, namespace, "first", {"replicas": 1})
        wait_weights_present(cluster, namespace, "first", {node})
    finally:
        done.set()
        watcher.join()
        cluster.core.delete_namespace(namespace)


def scale_to_zero_until_evicted(cluster: Cluster, namespace: str, name: str) -> None:
    """The service's replicas to 0, then until its pods and its copies in status are gone."""
    patch_spec(cluster, namespace, name, {"replicas": 0})
    wait_for(
        lambda: weights_of(cluster, namespace, name) == [] and not engine_pods(cluster, namespace, name),
        timeout=90,
        what=f"{name}'s model evicted from the node",
    )


def record_evictions(cluster: Cluster, namespace: str, done: threading.Event, seen: set[str]) -> None:
    """Eviction Jobs as they are created (they are deleted once done), until `done`."""
    batch = client.BatchV1Api(cluster.api_client)
    version = None
    while not done.is_set():
        stream = watch.Watch().stream(
            batch.list_namespaced_job,
            namespace,
            label_selector=f"{ACTION_LABEL}=evict",
            resource_version=version,
            timeout_seconds=2,
        )
        for event in stream:
            version = event["object"].metadata.resource_version
            if event["type"] == "ADDED":
                seen.add(event["object"].metadata.name)


def test_a_deleted_namespaces_volume_and_node_directories_go(
    cluster: Cluster, cached_operator: OperatorProcess, chart_identity: ChartIdentity
) -> None:
    namespace = restricted_namespace(cluster.core, "weights-gone")
    batch = client.BatchV1Api(cluster.api_client)
    create(cluster, namespace, restricted_service("gone", replicas=2))
    wait_ready(cluster, namespace, "gone")
    nodes = {p.spec.node_name for p in engine_pods(cluster, namespace, "gone")}
    uid = cluster.core.read_namespaced_persistent_volume_claim(CACHE_CLAIM, namespace).metadata.uid
    volume = compute_volume_name(uid)
    directories = {directory_job_name(uid, node) for node in nodes}

    def made() -> bool:
        names = {j.metadata.name for j in batch.list_namespaced_job(chart_identity.namespace).items}
        assert directories <= names, names
        return True

    wait_for(made, timeout=60, what="the namespace's directory Job on each engine node")
    assert cluster.core.read_persistent_volume(volume).spec.persistent_volume_reclaim_policy == "Retain"

    cluster.core.delete_namespace(namespace)

    def removed() -> set[str]:
        names = [v.metadata.name for v in cluster.core.list_persistent_volume().items]
        assert volume not in names, "the volume is still there"
        return {j.metadata.name for j in batch.list_namespaced_job(chart_identity.namespace).items}

    jobs = wait_for(removed, timeout=180, what="the deleted claim's volume removed")
    # Its directory removed from each node that had one (by Jobs in the operator's namespace),
    # and the Jobs that made them are gone with it.
    assert {cleanup_job_name(uid, node) for node in nodes} <= jobs
    assert directories & jobs == set()
    cleanup = batch.read_namespaced_job(cleanup_job_name(uid, sorted(nodes)[0]), chart_identity.namespace)
    assert cleanup.spec.template.spec.containers[0].command[-1] == compute_volume_path(ROOT, namespace, uid)


def failed_fetch_job(namespace: str, source: str, node: str) -> dict[str, Any]:
    """A fetch Job of `source` on `node` that fails: KWOK completes every pod it runs, so this one's
    pod names no node that exists and the Job's 1 s deadline fails it (as a fetch that ran out of
    retries would be); the labels and annotations are the operator's own."""
    labels = {"inferfleet.io/model-cache": "fetch", "inferfleet.io/weights-model": compute_model_id(source)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": fetch_job_name(namespace, source, node),
            "labels": labels,
            "annotations": {"inferfleet.io/weights-node": node, "inferfleet.io/weights-source": source},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": "no-such-node"},
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {"name": "fetch", "image": "fetch:1", "securityContext": RESTRICTED_SECURITY_CONTEXT}
                    ],
                },
            },
        },
    }


def test_a_failed_fetch_is_retried_after_its_backoff_as_a_new_job(
    cluster: Cluster, cached_operator: OperatorProcess
) -> None:
    namespace, node, source = restricted_namespace(cluster.core, "weights-retry"), "l4-c-2", "hf://acme/flaky"
    batch = client.BatchV1Api(cluster.api_client)
    try:
        batch.create_namespaced_job(namespace, failed_fetch_job(namespace, source, node))

        def failed() -> str:
            job = batch.read_namespaced_job(fetch_job_name(namespace, source, node), namespace)
            [condition] = [
                c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"
            ]
            return str(condition.reason)

        assert wait_for(failed, timeout=30, what="the fetch Job failed") == "DeadlineExceeded"
        create(cluster, namespace, pinned_service("flaky", source, node))
        wait_ready(cluster, namespace, "flaky")

        def said() -> str:
            [weights] = weights_of(cluster, namespace, "flaky")
            assert weights["state"] == "Failed", weights
            return str(weights["message"])

        message = wait_for(said, timeout=30, what="status.weights saying the fetch failed")
        assert message.startswith("attempt 1 failed; attempt 2 at "), message
        # The requeue brings the retry when it is due, 30 s after the failure: a new Job, attempt 2.
        retried = fetch_job_name(namespace, source, node, 2)
        wait_weights_present(cluster, namespace, "flaky", {node})
        [weights] = weights_of(cluster, namespace, "flaky")
        assert weights["job"] == retried
        [job] = fetch_jobs(cluster, namespace)
        assert (job.metadata.name, job.metadata.annotations["inferfleet.io/weights-attempt"]) == (
            retried,
            "2",
        )
    finally:
        cluster.core.delete_namespace(namespace)
