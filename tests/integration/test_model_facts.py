"""parametersBillions left out: a model inferfleet knows is placed from its known facts; one it does
not know waits with Ready=False ModelMetadataPending, an Event and no pods, until the spec says it
(the real local control plane, the operator under the chart's RBAC)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.weights_naming import ACTION_LABEL, metadata_job_name
from tests.conftest import Cluster
from tests.integration.test_reconcile import (
    create,
    engine_pods,
    events_for,
    patch_spec,
    read,
    small_service,
    wait_ready,
    wait_ready_reason,
)
from tests.integration.test_weights_cache import (  # noqa: F401 (fixtures: the cache on, the chart's RBAC)
    cache_kubeconfig,
    cached_operator,
    failed_fetch_job,
    fetch_jobs,
    report_result,
    restricted_service,
)
from tests.support import restricted_namespace, status_condition

pytestmark = pytest.mark.usefixtures("crds_installed")


def without_model_facts(name: str, source: str) -> dict[str, Any]:
    body = small_service(name)
    model = body["spec"]["model"]
    del model["parametersBillions"], model["architecture"]
    model["source"] = source
    model["name"] = name
    return body


def wait_event(cluster: Cluster, namespace: str, name: str, reason: str) -> list[Any]:
    def posted() -> list[Any]:
        events = [e for e in events_for(cluster, namespace, name) if e.reason == reason]
        assert events, f"no {reason} Event for {name} yet"
        return events

    return wait_for(posted, timeout=30, what=f"the {reason} Event of {name}")


@pytest.fixture
def operator(run_operator: Callable[..., OperatorProcess], namespace: str) -> OperatorProcess:
    return run_operator(namespaces=[namespace])


def test_a_known_model_without_a_parameter_count_is_placed_from_the_known_models(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, without_model_facts("llama", "hf://meta-llama/Llama-3.1-8B-Instruct"))
    status = wait_ready(cluster, namespace, "llama")["status"]
    assert status["model"] == {
        "source": "KnownModels",
        "knownModel": "meta-llama/Llama-3.1-8B-Instruct",
        "modelType": "llama",
        "parameters": 8_030_261_248,
        "dtype": "bfloat16",
        "architecture": {"numLayers": 32, "hiddenSize": 4096, "numAttentionHeads": 32, "numKeyValueHeads": 8},
    }
    assert status["shardPlan"]["weightsGiB"] == 15.0  # 8,030,261,248 x 2 bytes
    assert len(engine_pods(cluster, namespace, "llama")) == 1


def test_an_unknown_model_waits_for_its_parameter_count_with_an_event_and_no_pods(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, without_model_facts("mine", "hf://acme/private-model-13b"))
    ready = wait_ready_reason(cluster, namespace, "mine", "ModelMetadataPending")
    assert ready["status"] == "False"
    assert "hf://acme/private-model-13b is not one of inferfleet's known models" in ready["message"]
    assert "set spec.model.parametersBillions" in ready["message"]
    [event] = wait_event(cluster, namespace, "mine", "ModelMetadataPending")
    assert (event.type, event.message) == ("Warning", ready["message"])
    assert read(cluster, namespace, "mine")["status"]["phase"] == "Pending"
    assert engine_pods(cluster, namespace, "mine") == []
    assert cluster.apps.list_namespaced_deployment(namespace).items == []

    # Said in the spec, it is placed: the operator was waiting, not stuck.
    patch_spec(cluster, namespace, "mine", {"model": {"parametersBillions": 13.0}})
    status = wait_ready(cluster, namespace, "mine")["status"]
    assert status["model"]["source"] == "Spec"
    assert status["model"]["parameters"] == 13_000_000_000
    assert len(engine_pods(cluster, namespace, "mine")) == 1
    assert operator.healthy()  # never restarted: no crash loop


def test_a_spec_contradicting_the_known_model_is_placed_as_written_with_a_warning(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    body = small_service("llama-wrong")  # hf://meta-llama/Llama-3.1-8B-Instruct, 8.03B, 32 layers
    body["spec"]["model"]["architecture"]["numLayers"] = 40
    create(cluster, namespace, body)
    wait_ready(cluster, namespace, "llama-wrong")
    consistent = status_condition(read(cluster, namespace, "llama-wrong"), "ModelConsistent")
    assert (consistent["status"], consistent["reason"]) == ("False", "SpecContradictsModel")
    assert "spec.model.architecture.numLayers is 40 but inferfleet's known models" in consistent["message"]
    [event] = wait_event(cluster, namespace, "llama-wrong", "SpecContradictsModel")
    assert (event.type, event.message) == ("Warning", consistent["message"])


# The facts `inferfleet fetch-model --metadata-only` reports for a 13B llama (config.json,
# index, safetensors headers): tests/unit/test_fetch_model_metadata.py proves the process.
PRIVATE_13B_FACTS = {
    "parameters": 13_015_864_320,
    "dtype": "bfloat16",
    "modelType": "llama",
    "architecture": {
        "num_layers": 40,
        "hidden_size": 5120,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
    },
}


@pytest.mark.usefixtures("cached_operator")
def test_a_model_nobody_knows_is_placed_once_its_metadata_job_read_its_files(cluster: Cluster) -> None:
    namespace = restricted_namespace(cluster.core, "metadata-only")
    source = "hf://acme/private-model-13b"
    try:
        body = restricted_service("private", replicas=1)
        model = body["spec"]["model"]
        del model["parametersBillions"], model["architecture"]
        model["source"], model["name"] = source, "private"
        create(cluster, namespace, body)
        ready = wait_ready_reason(cluster, namespace, "private", "ModelMetadataPending")
        assert f"is reading {source}'s config.json" in ready["message"], ready
        assert engine_pods(cluster, namespace, "private") == []

        # One Job reads the model's files, on any node: KWOK completes its pod on a CPU node (the
        # GPU nodes are tainted and it tolerates nothing), in a namespace enforcing `restricted`.
        batch = client.BatchV1Api(cluster.api_client)

        def completed() -> client.V1Job:
            [job] = batch.list_namespaced_job(namespace, label_selector=f"{ACTION_LABEL}=metadata").items
            assert job.status.succeeded == 1, job.status
            return job

        job = wait_for(completed, timeout=60, what="the metadata Job completed")
        assert job.spec.template.spec.node_selector is None
        assert job.spec.template.spec.containers[0].args[:3] == ["fetch-model", source, "--metadata-only"]
        [pod] = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job.metadata.name}"
        ).items
        assert not cluster.core.read_node(pod.spec.node_name).spec.taints
        kinds = [j.metadata.labels.get(ACTION_LABEL) for j in fetch_jobs(cluster, namespace)]
        assert kinds == ["metadata"], "no weights are fetched before the model is placed"

        result = {
            "bytes": 26_031_728_640,
            "revision": "abc",
            "model": PRIVATE_13B_FACTS,
            "metadata_only": True,
        }
        report_result(cluster, namespace, str(job.metadata.name), result)
        status = wait_ready(cluster, namespace, "private")["status"]
        assert status["model"]["source"] == "Files"
        assert (status["model"]["parameters"], status["model"]["architecture"]["numLayers"]) == (
            13_015_864_320,
            40,
        )
        [engine] = engine_pods(cluster, namespace, "private")
        # Placed now: the weights are fetched on the engine's node, as for any cached model.
        nodes = {
            j.metadata.annotations.get("inferfleet.io/weights-node")
            for j in fetch_jobs(cluster, namespace)
            if j.metadata.labels.get(ACTION_LABEL) != "metadata"
        }
        assert nodes == {engine.spec.node_name}
    finally:
        cluster.core.delete_namespace(namespace)


@pytest.mark.usefixtures("cached_operator")
def test_a_failed_metadata_read_says_why_with_a_warning_and_is_retried(cluster: Cluster) -> None:
    namespace = restricted_namespace(cluster.core, "metadata-retry")
    source = "hf://acme/flaky-13b"
    batch = client.BatchV1Api(cluster.api_client)
    try:
        # A metadata Job of the operator's name and labels that fails by its deadline (KWOK
        # completes every pod it runs) and leaves no result: a failure that may heal.
        job = failed_fetch_job(namespace, source, "unused")
        job["metadata"]["name"] = metadata_job_name(namespace, source)
        job["metadata"]["labels"][ACTION_LABEL] = "metadata"
        del job["metadata"]["annotations"]["inferfleet.io/weights-node"]
        batch.create_namespaced_job(namespace, job)
        body = restricted_service("flaky", replicas=1)
        model = body["spec"]["model"]
        del model["parametersBillions"], model["architecture"]
        model["source"], model["name"] = source, "flaky"
        create(cluster, namespace, body)

        ready = wait_ready_reason(cluster, namespace, "flaky", "ModelMetadataFailed")
        assert f"reading the facts of {source} from its files failed" in ready["message"], ready
        assert "DeadlineExceeded" in ready["message"]
        assert "attempt 1 failed; attempt 2 at " in ready["message"]
        [event] = wait_event(cluster, namespace, "flaky", "ModelMetadataFailed")
        assert (event.type, event.message) == ("Warning", ready["message"])

        # 30 s after the failure, attempt 2 (the operator's own Job) runs, and its facts place it.
        def second() -> client.V1Job:
            job = batch.read_namespaced_job(metadata_job_name(namespace, source, 2), namespace)
            assert job.status.succeeded == 1, job.status
            return job

        wait_for(second, timeout=90, what="attempt 2 of the metadata Job completed")
        result = {
            "bytes": 26_031_728_640,
            "revision": "abc",
            "model": PRIVATE_13B_FACTS,
            "metadata_only": True,
        }
        report_result(cluster, namespace, metadata_job_name(namespace, source, 2), result)
        status = wait_ready(cluster, namespace, "flaky")["status"]
        assert status["model"]["parameters"] == 13_015_864_320
        names = [j.metadata.name for j in batch.list_namespaced_job(namespace).items]
        assert metadata_job_name(namespace, source) not in names, "the failed attempt is deleted"
    finally:
        cluster.core.delete_namespace(namespace)
