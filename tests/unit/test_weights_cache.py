"""The node weights cache's decisions: objects per namespace and node, engine pod mounts, state."""

from datetime import UTC, datetime
from typing import Any

import pytest

from inferfleet.api import Dtype, InferenceServiceSpec, ShardPlan
from inferfleet.api.limits import MAX_WEIGHTS_NODES
from inferfleet.api.status import InferenceServiceStatus, NodeWeights, WeightsReason, WeightsState
from inferfleet.planning.children import Owner, build_cached_template, build_deployment
from inferfleet.planning.groups import build_group_statefulset
from inferfleet.planning.model_files import ModelFacts
from inferfleet.planning.placement import GroupPlacement
from inferfleet.planning.weights_cache import (
    CACHE_CLAIM,
    CURRENT_MODEL,
    WAIT_CONTAINER,
    CacheObserved,
    CacheSettings,
    FetchResult,
    ObservedFetch,
    build_cache_volume,
    build_fetch_result,
    build_observed_fetch,
    compute_cache_key,
    compute_fetch_pod_wakes,
    compute_model_id,
    compute_node_weights,
    compute_ref_file,
    compute_volume_is_ours,
    compute_warm_nodes,
    compute_weights_events,
    compute_weights_wake,
    directory_job_name,
    fetch_job_name,
    plan_weights,
)
from inferfleet.weights.sources import build_cache_key, parse_source

SETTINGS = CacheSettings(
    root="/var/lib/inferfleet/models", image="ghcr.io/inferfleet/inferfleet:1", namespace="ops"
)
OWNER = Owner(name="llama", namespace="ml", uid="uid-1")
ONE_GPU = ShardPlan(tensor_parallel=1, pipeline_parallel=1, gpus_per_pod=1, pods_per_replica=1)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HF = "hf://meta-llama/Llama-3.1-8B-Instruct"


def spec(
    source: str = HF, kind: str = "vllm", env: list[dict[str, Any]] | None = None
) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": "llama", "source": source, "parametersBillions": 8},
            "engine": {"kind": kind, "image": "img", "env": env or []},
            "accelerator": {"product": "NVIDIA-L4"},
            "scheduling": {"tolerations": [{"key": "pool", "value": "gpu", "effect": "NoSchedule"}]},
        }
    )


@pytest.mark.parametrize(
    "uri",
    [HF, "hf://org/name@v1.0", "hf://org/a.b_c-d", "s3://bucket/models/llama/", "s3://b/a--b", "s3://bucket"],
)
def test_the_cache_key_is_the_fetchers_own(uri: str) -> None:
    assert compute_cache_key(uri) == build_cache_key(parse_source(uri))


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        (HF, "main"),
        ("hf://o/n@v1.0", "v1.0"),
        ("hf://o/n@refs/pr/1", "refs%2Fpr%2F1"),
        ("s3://b/p", "latest"),
    ],
)
def test_the_ref_file_is_the_one_the_fetcher_writes(uri: str, ref: str) -> None:
    assert compute_ref_file(uri) == ref


def test_without_a_claim_the_claim_comes_first_and_nothing_else() -> None:
    plan = plan_weights(SETTINGS, spec(), "ml", ["n1"], CacheObserved())
    assert plan.claim is not None
    assert plan.claim["metadata"] == {
        "name": CACHE_CLAIM,
        "namespace": "ml",
        "labels": {"inferfleet.io/model-cache": "volume"},
    }
    assert plan.claim["spec"]["storageClassName"] == ""
    assert (plan.volume, plan.directory_jobs, plan.fetch_jobs) == (None, (), ())


def test_each_node_without_a_fetch_gets_one_and_a_directory() -> None:
    observed = CacheObserved(
        claim_uid="u1",
        fetches=(
            ObservedFetch("j", "n1", HF, WeightsState.PRESENT),
            ObservedFetch("k", "n3", "s3://x", WeightsState.PRESENT),
        ),
    )
    plan = plan_weights(SETTINGS, spec(), "ml", ["n3", "n1", "n2", "n2"], observed)
    assert plan.claim is None
    assert plan.volume is not None
    assert plan.volume["spec"]["local"] == {"path": "/var/lib/inferfleet/models/ml.u1"}
    assert [j["metadata"]["annotations"]["inferfleet.io/weights-node"] for j in plan.fetch_jobs] == [
        "n2",
        "n3",
    ]
    assert [j["metadata"]["name"] for j in plan.directory_jobs] == [
        directory_job_name("u1", n) for n in ("n1", "n2", "n3")
    ]
    assert {j["metadata"]["namespace"] for j in plan.directory_jobs} == {"ops"}


def test_nothing_more_once_every_node_has_its_objects() -> None:
    observed = CacheObserved(
        claim_uid="u1",
        volume_exists=True,
        directory_jobs=frozenset({directory_job_name("u1", "n1")}),
        fetches=(ObservedFetch("j", "n1", HF, WeightsState.FAILED, "x"),),
    )
    plan = plan_weights(SETTINGS, spec(), "ml", ["n1"], observed)
    assert (plan.claim, plan.volume, plan.directory_jobs, plan.fetch_jobs) == (None, None, (), ())


@pytest.mark.parametrize("source", ["pvc://claim/llama", "oci://reg/model:1", "gs://b/p"])
def test_sources_the_cache_does_not_fetch_plan_nothing_and_keep_the_pod(source: str) -> None:
    assert plan_weights(SETTINGS, spec(source), "ml", ["n1"], CacheObserved()).claim is None
    deployment = build_deployment(OWNER, spec(source), ONE_GPU)
    assert build_cached_template(deployment, spec(source), SETTINGS.image) == deployment


def test_the_fetch_job_runs_on_its_node_restricted_with_the_engines_source_secrets() -> None:
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    s = spec(env=[token, {"name": "OTHER", "value": "x"}])
    observed = CacheObserved(claim_uid="u1", volume_exists=True)
    [job] = plan_weights(SETTINGS, s, "ml", ["gpu-1"], observed).fetch_jobs
    assert job["metadata"]["name"] == fetch_job_name("ml", HF, "gpu-1")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u1"
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-1"}
    assert {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["volumes"] == [{"name": "cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}}]
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["securityContext"]["runAsNonRoot"]
    [c] = pod["containers"]
    assert c["args"] == [
        "fetch-model",
        HF,
        "--cache-root",
        "/cache",
        "--termination-log",
        "/dev/termination-log",
    ]
    assert c["env"] == [token]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert "hostPath" not in str(pod)


def test_only_a_volume_under_the_root_for_its_own_claim_is_ours() -> None:
    volume = build_cache_volume(SETTINGS.root, "ml", "u1")
    assert compute_volume_is_ours(volume, SETTINGS.root)
    assert volume["spec"]["claimRef"]["name"] == CACHE_CLAIM
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    elsewhere = {**volume, "spec": {**volume["spec"], "local": {"path": "/etc"}}}
    other_claim = {
        **volume,
        "spec": {**volume["spec"], "claimRef": {**volume["spec"]["claimRef"], "name": "x"}},
    }
    host = {**volume, "spec": {**volume["spec"], "hostPath": {"path": "/"}}}
    climbing = build_cache_volume(SETTINGS.root, "..", "u1")
    for bad in (elsewhere, other_claim, host, climbing):
        assert not compute_volume_is_ours(bad, SETTINGS.root)


def test_engine_pods_mount_the_model_read_only_after_the_wait() -> None:
    deployment = build_cached_template(build_deployment(OWNER, spec(), ONE_GPU), spec(), SETTINGS.image)
    pod = deployment["spec"]["template"]["spec"]
    assert {
        "name": "model-weights",
        "persistentVolumeClaim": {"claimName": CACHE_CLAIM, "readOnly": True},
    } in pod["volumes"]
    [wait] = pod["initContainers"]
    assert wait["name"] == WAIT_CONTAINER
    assert wait["image"] == SETTINGS.image
    engine = pod["containers"][0]
    mount = {
        "name": "model-weights",
        "mountPath": "/models/weights",
        "subPath": compute_cache_key(HF),
        "readOnly": True,
    }
    assert mount in engine["volumeMounts"]
    assert mount in wait["volumeMounts"]
    assert engine["args"][engine["args"].index("--model") + 1] == CURRENT_MODEL


def test_every_rank_of_a_group_mounts_its_nodes_cache() -> None:
    two = ShardPlan(tensor_parallel=1, pipeline_parallel=2, gpus_per_pod=1, pods_per_replica=2)
    sts = build_group_statefulset(OWNER, spec(), two, 0, GroupPlacement(domain="z", nodes=("a", "b")))
    pod = build_cached_template(sts, spec(), SETTINGS.image)["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["name"] == WAIT_CONTAINER
    assert CURRENT_MODEL in pod["containers"][0]["args"]


def test_a_custom_engine_keeps_its_args_and_finds_the_model_at_the_link() -> None:
    s = spec(kind="custom")
    pod = build_cached_template(build_deployment(OWNER, s, ONE_GPU), s, "i")["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == []
    assert pod["initContainers"][0]["command"][-1] == CURRENT_MODEL


@pytest.mark.parametrize(
    ("status", "state", "message"),
    [
        ({}, WeightsState.FETCHING, None),
        ({"succeeded": 1}, WeightsState.PRESENT, None),
        (
            {
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}
                ]
            },
            WeightsState.FAILED,
            "BackoffLimitExceeded: m",
        ),
    ],
)
def test_a_jobs_state(status: dict[str, Any], state: WeightsState, message: str | None) -> None:
    job = {
        "metadata": {
            "name": "j",
            "annotations": {"inferfleet.io/weights-node": "n", "inferfleet.io/weights-source": HF},
        },
        "status": status,
    }
    assert build_observed_fetch(job) == ObservedFetch("j", "n", HF, state, message)


def test_the_fetch_result_comes_from_the_termination_message() -> None:
    line = '{"bytes": 16060522496, "revision": "0e9e39f", "source": "hf://x/y"}'
    status = {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": line + "\n"}}}]}
    assert build_fetch_result(status) == FetchResult(bytes=16060522496, revision="0e9e39f")
    assert build_fetch_result({"containerStatuses": [{"state": {"terminated": {"message": "oops"}}}]}) is None
    with_facts = '{"bytes": 1, "model": {"parameters": 7, "dtype": "float16"}}'
    status = {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": with_facts}}}]}
    result = build_fetch_result(status)
    assert result is not None
    assert result.model == ModelFacts(parameters=7, dtype=Dtype.FLOAT16)


def test_node_state_failed_first_then_most_recently_used_and_bounded() -> None:
    fetches = [
        ObservedFetch(f"j{i}", f"n{i:03}", HF, WeightsState.PRESENT) for i in range(MAX_WEIGHTS_NODES + 5)
    ]
    failed = ObservedFetch("jf", "nf", HF, WeightsState.FAILED, "BackoffLimitExceeded")
    observed = CacheObserved(
        claim_uid="u",
        fetches=(*fetches, failed),
        results={
            "j7": FetchResult(bytes=10, revision="r"),
            "jf": FetchResult(error="InsufficientSpace", message="need 9 GiB"),
        },
    )
    previous = [
        NodeWeights(
            node="n003",
            state=WeightsState.PRESENT,
            reason=WeightsReason.FETCHED,
            last_used="2025-12-01T00:00:00Z",
        )
    ]
    weights = compute_node_weights(HF, observed, {"n007"}, previous, NOW)
    assert weights is not None
    assert len(weights) == MAX_WEIGHTS_NODES
    assert weights[0].model_dump(exclude_none=True) == {
        "node": "nf", "state": WeightsState.FAILED, "reason": WeightsReason.FETCH_FAILED,
        "message": "InsufficientSpace: need 9 GiB", "job": "jf",
    }  # fmt: skip
    assert (weights[1].node, weights[1].bytes, weights[1].revision, weights[1].last_used) == (
        "n007",
        10,
        "r",
        "2026-01-02T03:04:05Z",
    )
    assert (weights[2].node, weights[2].last_used) == ("n003", "2025-12-01T00:00:00Z")
    assert InferenceServiceStatus.model_validate({"weights": [w.dump() for w in weights]}).weights == weights


def test_no_fetch_of_this_source_no_weights_status() -> None:
    observed = CacheObserved(
        claim_uid="u", fetches=(ObservedFetch("j", "n", "s3://other", WeightsState.PRESENT),)
    )
    assert compute_node_weights(HF, observed, set(), None, NOW) is None


def test_an_event_when_a_node_turns_failed_only() -> None:
    fetching = NodeWeights(node="n", state=WeightsState.FETCHING, reason=WeightsReason.FETCH_RUNNING)
    failed = NodeWeights(
        node="n", state=WeightsState.FAILED, reason=WeightsReason.FETCH_FAILED, message="Corrupt"
    )
    assert compute_weights_events([fetching], [failed]) == [
        ("Warning", "FetchFailed", "fetching the weights on node n failed: Corrupt")
    ]
    assert compute_weights_events([failed], [failed]) == []


@pytest.mark.parametrize(
    ("spec_", "status", "wakes"),
    [
        ({"nodeName": "n", "initContainers": [{"name": WAIT_CONTAINER}]}, {}, True),
        ({"initContainers": [{"name": WAIT_CONTAINER}]}, {}, False),
        ({"nodeName": "n"}, {}, False),
        (
            {"nodeName": "n", "initContainers": [{"name": WAIT_CONTAINER}]},
            {"conditions": [{"type": "Ready", "status": "True"}]},
            False,
        ),
        (
            {"nodeName": "n", "initContainers": [{"name": WAIT_CONTAINER}]},
            {"conditions": [{"type": "Ready", "status": "False"}]},
            True,
        ),
    ],
)
def test_a_bound_pod_waiting_for_weights_wakes_its_service(
    spec_: dict[str, Any], status: dict[str, Any], wakes: bool
) -> None:
    woken = compute_weights_wake("ml", {"inferfleet.io/service": "llama"}, spec_, status)
    assert woken == (("ml", "llama") if wakes else None)


def test_a_deleted_pod_that_read_the_cache_wakes_its_service_for_eviction() -> None:
    bound = {"nodeName": "n1", "initContainers": [{"name": WAIT_CONTAINER}]}
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    labels = {"inferfleet.io/service": "llama"}
    assert compute_weights_wake("ml", labels, bound, ready) is None
    assert compute_weights_wake("ml", labels, bound, ready, deleted=True) == ("ml", "llama")
    assert compute_weights_wake("ml", labels, {"nodeName": "n1"}, ready, deleted=True) is None


def test_a_terminated_fetch_pod_wakes_the_namespaces_services_of_its_model() -> None:
    services = {
        ("ml", "a"): {"spec": {"model": {"source": HF}}},
        ("ml", "b"): {"spec": {"model": {"source": "s3://b/other"}}},
        ("team", "c"): {"spec": {"model": {"source": HF}}},
    }
    labels = {"inferfleet.io/model-cache": "fetch", "inferfleet.io/weights-model": compute_model_id(HF)}
    assert compute_fetch_pod_wakes("ml", labels, {"phase": "Succeeded"}, services) == [("ml", "a")]
    assert compute_fetch_pod_wakes("ml", labels, {"phase": "Running"}, services) == []
    assert (
        compute_fetch_pod_wakes("ml", {"inferfleet.io/service": "a"}, {"phase": "Succeeded"}, services) == []
    )


def test_warm_nodes_are_those_holding_this_source_and_not_being_evicted() -> None:
    fetches = [
        ObservedFetch("a", "n1", HF, WeightsState.PRESENT),
        ObservedFetch("b", "n2", HF, WeightsState.FETCHING),
        ObservedFetch("c", "n3", HF, WeightsState.FAILED, "x"),
        ObservedFetch("d", "n4", "s3://other/model", WeightsState.PRESENT),
        ObservedFetch("e", "n5", HF, WeightsState.PRESENT, evict=True),
    ]
    assert compute_warm_nodes(fetches, HF) == {"n1"}
