"""The weights cache's Jobs run for real on the local cluster: in namespaces named JOBS_PREFIX...
KWOK leaves their pods to JobPods, which runs each one's container as a real `inferfleet
fetch-model` process on its node's disk (a directory per node), with the Secret the pod names,
against a loopback Hugging Face stand-in driven through the real huggingface_hub client. The real
Job controller reads how the pods ended: completion, and the Job's podFailurePolicy. The operator
runs under the chart's RBAC with modelCache.root, as in test_weights_cache.py."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from inferfleet.localcluster.file_standin import build_fake_model
from inferfleet.localcluster.hf_standin import HubStandin
from inferfleet.localcluster.job_pods import JobPods
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.weights_naming import (
    CACHE_CLAIM,
    compute_cache_key,
    compute_ref_file,
    compute_volume_path,
    fetch_job_name,
)
from tests.conftest import JOBS_PREFIX, Cluster
from tests.integration.test_reconcile import create, read, wait_ready
from tests.integration.test_weights_cache import (  # noqa: F401 (fixtures)
    ROOT,
    budget_operator,
    cache_kubeconfig,
    cached_operator,
    pinned_service,
    scale_to_zero_until_evicted,
    wait_weights_present,
    weights_of,
)
from tests.support import restricted_namespace

pytestmark = pytest.mark.usefixtures("crds_installed")

TOKEN = "hf_jobs_token"
MODEL = build_fake_model(shard_bytes=64 << 10)
NODE = "l4-c-1"


@pytest.fixture
def hub() -> Iterator[tuple[HubStandin, str]]:
    """The Hub serving acme/tiny-llama, and its endpoint."""
    server = HubStandin("acme/tiny-llama", MODEL, token=TOKEN)
    yield server, server.start()
    server.stop()


def jobs_namespace(cluster: Cluster, token: str) -> str:
    namespace = restricted_namespace(cluster.core, f"{JOBS_PREFIX}weights")
    secret = {"token": base64.b64encode(token.encode()).decode()}
    cluster.core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="hf"), data=secret)
    )
    return namespace


def hub_service(name: str, source: str, endpoint: str) -> dict[str, Any]:
    """Pinned to NODE, its token from the Secret `hf`, the Hub at `endpoint`."""
    body = pinned_service(name, source, NODE)
    body["spec"]["replicas"] = 1
    body["spec"]["engine"]["env"].append({"name": "HF_ENDPOINT", "value": endpoint})
    return body


def model_dir(job_pods: JobPods, cluster: Cluster, namespace: str, source: str) -> Path:
    """The model's directory under the namespace's volume on NODE's disk."""
    uid = cluster.core.read_namespaced_persistent_volume_claim(CACHE_CLAIM, namespace).metadata.uid
    volume = compute_volume_path(ROOT, namespace, uid).lstrip("/")
    return job_pods.node_dir(NODE) / volume / compute_cache_key(source)


@pytest.mark.usefixtures("cached_operator")
def test_a_fetch_job_downloads_the_model_onto_its_nodes_disk_and_reports_its_size(
    cluster: Cluster, job_pods: JobPods, hub: tuple[HubStandin, str]
) -> None:
    (server, endpoint), namespace, source = hub, jobs_namespace(cluster, TOKEN), "hf://acme/tiny-llama"
    try:
        create(cluster, namespace, hub_service("tiny", source, endpoint))
        wait_ready(cluster, namespace, "tiny")
        wait_weights_present(cluster, namespace, "tiny", {NODE})

        def size_seen() -> int:
            [weights] = weights_of(cluster, namespace, "tiny")
            assert weights.get("bytes"), weights
            return int(weights["bytes"])

        assert wait_for(size_seen, timeout=60, what="the fetched size in status") == sum(
            map(len, MODEL.values())
        )
        directory = model_dir(job_pods, cluster, namespace, source)
        revision = (directory / "refs" / compute_ref_file(source)).read_text().strip()
        assert revision == server.commit
        for path, data in MODEL.items():
            assert (directory / revision / path).read_bytes() == data, path
        assert dict(server.traffic.served) == {p: len(d) for p, d in MODEL.items()}  # each byte once
    finally:
        cluster.core.delete_namespace(namespace)


@pytest.mark.usefixtures("budget_operator")
def test_eviction_removes_the_models_files_from_its_nodes_disk(
    cluster: Cluster, job_pods: JobPods, hub: tuple[HubStandin, str]
) -> None:
    other = HubStandin("acme/other", build_fake_model(shard_bytes=64 << 10, seed=3), token=TOKEN)
    namespace, first, second = jobs_namespace(cluster, TOKEN), "hf://acme/tiny-llama", "hf://acme/other"
    try:
        for name, source, endpoint in (("first", first, hub[1]), ("second", second, other.start())):
            create(cluster, namespace, hub_service(name, source, endpoint))
            wait_ready(cluster, namespace, name)
            wait_weights_present(cluster, namespace, name, {NODE})
        first_dir, second_dir = (model_dir(job_pods, cluster, namespace, s) for s in (first, second))
        assert first_dir.is_dir()
        assert second_dir.is_dir()

        # Over the budget, but each copy in use until the first's replica goes: then its files go.
        scale_to_zero_until_evicted(cluster, namespace, "first")
        # Every file gone; only its lock file stays (a fetch waiting on it holds it: evict.py).
        assert [p.name for p in first_dir.rglob("*")] == [".lock"]
        assert (second_dir / "refs" / compute_ref_file(second)).is_file()
    finally:
        other.stop()
        cluster.core.delete_namespace(namespace)


@pytest.mark.usefixtures("cached_operator")
def test_a_refused_token_fails_the_fetch_job_at_once_by_its_pod_failure_policy(
    cluster: Cluster, job_pods: JobPods, hub: tuple[HubStandin, str]
) -> None:
    namespace, source = jobs_namespace(cluster, "hf_wrong_token"), "hf://acme/tiny-llama"
    batch = client.BatchV1Api(cluster.api_client)
    try:
        create(cluster, namespace, hub_service("refused", source, hub[1]))
        job = fetch_job_name(namespace, source, NODE)

        def failed() -> client.V1JobCondition:
            conditions = batch.read_namespaced_job(job, namespace).status.conditions or []
            [condition] = [c for c in conditions if c.type == "Failed" and c.status == "True"]
            return condition

        condition = wait_for(failed, timeout=90, what="the fetch Job failed")
        assert condition.reason == "PodFailurePolicy", condition
        # One pod: exit code 5 (no access) is no failure a rerun heals, so no backoff retries.
        [pod] = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        [status] = pod.status.container_statuses
        assert status.state.terminated.exit_code == 5, status.state.terminated

        def said() -> str:
            [weights] = weights_of(cluster, namespace, "refused")
            assert weights["state"] == "Failed", weights
            return str(weights["message"])

        message = wait_for(said, timeout=60, what="status.weights saying why the fetch failed")
        # The process's own words, from its termination message.
        assert message == (
            "attempt 1 failed and is not retried (NotFound does not heal by itself): "
            "NotFound: hf://acme/tiny-llama: not found or no access (401 Client Error.)"
        ), message
        assert read(cluster, namespace, "refused")["status"]["weights"][0]["job"] == job
    finally:
        cluster.core.delete_namespace(namespace)
