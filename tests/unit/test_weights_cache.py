"""The node weights cache's decisions: objects per namespace and node, engine pod mounts, state."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inferfleet.api import Dtype, InferenceServiceSpec, ShardPlan
from inferfleet.api.limits import MAX_WEIGHTS_NODES
from inferfleet.api.status import InferenceServiceStatus, NodeWeights, WeightsReason, WeightsState
from inferfleet.planning.children import Owner, build_cached_template, build_deployment
from inferfleet.planning.groups import build_group_statefulset
from inferfleet.planning.inventory import ProductCapacity
from inferfleet.planning.model_files import MetadataFetch, ModelFacts
from inferfleet.planning.placement import GroupPlacement
from inferfleet.planning.service import plan_service
from inferfleet.planning.weights_cache import (
    WeightsPlan,
    compute_fetch_pod_wakes,
    compute_fetched_facts,
    compute_metadata_fetch,
    compute_node_weights,
    compute_warm_nodes,
    compute_weights_events,
    compute_weights_wake,
    plan_weights,
)
from inferfleet.planning.weights_jobs import (
    CacheSettings,
    build_cleanup_job,
    build_directory_job,
    build_fetch_job,
    build_metadata_job,
)
from inferfleet.planning.weights_naming import (
    CACHE_CLAIM,
    CURRENT_MODEL,
    WAIT_CONTAINER,
    cleanup_job_name,
    compute_cache_key,
    compute_model_id,
    compute_ref_file,
    directory_job_name,
    fetch_job_name,
    metadata_job_name,
)
from inferfleet.planning.weights_observed import (
    CacheObserved,
    FetchResult,
    ObservedFetch,
    build_fetch_result,
    build_observed_fetch,
    build_observed_metadata,
    compute_fetch_retry,
    compute_retry_delay,
)
from inferfleet.planning.weights_volume import (
    VolumeCleanup,
    build_cache_volume,
    compute_volume_is_ours,
    plan_volume_cleanup,
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
    assert build_fetch_result(status) == FetchResult(bytes=16060522496, revision="0e9e39f", exit_code=0)
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


# --- A model nobody knows: its facts read by a metadata Job, without its weights ---

UNKNOWN = "hf://acme/private-13b"


def unknown_spec(source: str = UNKNOWN, env: list[dict[str, Any]] | None = None) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": "mine", "source": source},
            "engine": {"kind": "vllm", "image": "img", "env": env or []},
            "accelerator": {"product": "NVIDIA-L4"},
            "scheduling": {"tolerations": [{"key": "pool", "value": "gpu", "effect": "NoSchedule"}]},
        }
    )


def metadata_job_object(status: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "name": metadata_job_name("ml", UNKNOWN, attempt),
            "labels": {"inferfleet.io/model-cache": "fetch", "inferfleet.io/weights-action": "metadata"},
            "annotations": {
                "inferfleet.io/weights-source": UNKNOWN,
                "inferfleet.io/weights-attempt": str(attempt),
            },
        },
        "status": status,
    }


def test_the_metadata_job_runs_anywhere_restricted_with_the_engines_credentials_and_no_cache() -> None:
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    s = unknown_spec(env=[token, {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}])
    job = build_metadata_job(s, "ml", "claim-uid", SETTINGS)
    assert job["metadata"]["name"] == metadata_job_name("ml", UNKNOWN)
    assert job["metadata"]["ownerReferences"][0]["uid"] == "claim-uid"
    assert job["spec"]["activeDeadlineSeconds"] > 0
    pod = job["spec"]["template"]["spec"]
    # Any schedulable node: no node, no GPU toleration (GPU nodes are tainted: it lands elsewhere).
    assert {"nodeSelector", "tolerations", "affinity", "nodeName"} & set(pod) == set()
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}}]
    [container] = pod["containers"]
    assert container["args"][:3] == ["fetch-model", UNKNOWN, "--metadata-only"]
    assert "--cache-root" not in container["args"]
    assert container["env"][0] == token
    assert {e["name"] for e in container["env"]} == {"HF_TOKEN", "TMPDIR", "HF_HOME"}
    assert set(container["resources"]) == {"requests", "limits"}
    security = container["securityContext"]
    assert (security["runAsNonRoot"], security["capabilities"]) == (True, {"drop": ["ALL"]})
    assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["inferfleet.io/model-cache"] == "fetch"  # its pod's result is read like a fetch's
    assert labels["inferfleet.io/weights-model"] == compute_model_id(UNKNOWN)


@pytest.mark.parametrize(
    ("metadata", "reads", "expected"),
    [
        pytest.param(True, (), [metadata_job_name("ml", UNKNOWN)], id="size unknown: one metadata Job"),
        pytest.param(False, (), [], id="size known: none"),
        pytest.param(
            True, (ObservedFetch("m", "", UNKNOWN, WeightsState.FETCHING),), [], id="one runs: no second"
        ),
        pytest.param(
            True, (ObservedFetch("m", "", "hf://other/x", WeightsState.FETCHING),),
            [metadata_job_name("ml", UNKNOWN)], id="another model's Job is not this one's",
        ),
    ],
)  # fmt: skip
def test_a_metadata_job_per_namespace_and_source_while_the_size_is_unknown(
    metadata: bool, reads: tuple[ObservedFetch, ...], expected: list[str]
) -> None:
    observed = CacheObserved(claim_uid="u", volume_exists=True, metadata=reads)
    plan = plan_weights(SETTINGS, unknown_spec(), "ml", [], observed, now=NOW, metadata=metadata)
    assert [j["metadata"]["name"] for j in plan.fetch_jobs] == expected
    assert plan.directory_jobs == ()  # no node is wanted yet


def test_a_pvc_source_gets_no_metadata_job() -> None:
    observed = CacheObserved(claim_uid="u", volume_exists=True)
    assert (
        plan_weights(SETTINGS, unknown_spec("pvc://models/x"), "ml", [], observed, metadata=True)
        == WeightsPlan()
    )


def test_a_metadata_job_is_read_and_a_fetch_job_is_not_one() -> None:
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                              "lastTransitionTime": "2026-01-02T03:00:00Z"}]}  # fmt: skip
    observed = build_observed_metadata(metadata_job_object(failed, attempt=2))
    assert observed == ObservedFetch(
        metadata_job_name("ml", UNKNOWN, 2), "", UNKNOWN, WeightsState.FAILED, "BackoffLimitExceeded",
        attempt=2, failed_at="2026-01-02T03:00:00Z",
    )  # fmt: skip
    assert build_observed_fetch(metadata_job_object(failed)) is None  # not on a node: not a node's copy
    fetch = {"metadata": {"name": "f", "annotations": {"inferfleet.io/weights-node": "n",
                                                       "inferfleet.io/weights-source": HF}}}  # fmt: skip
    assert build_observed_metadata(fetch) is None


def test_the_facts_a_metadata_job_read_are_the_models_until_a_fetch_reports_its_own() -> None:
    read = ObservedFetch("m", "", UNKNOWN, WeightsState.PRESENT)
    results = {"m": FetchResult(model=ModelFacts(parameters=13_000_000_000))}
    observed = CacheObserved(claim_uid="u", metadata=(read,), results=results)
    assert compute_fetched_facts(observed, UNKNOWN) == ModelFacts(parameters=13_000_000_000)
    assert compute_fetched_facts(observed, "hf://other/x") is None
    fetched = ObservedFetch("f", "n1", UNKNOWN, WeightsState.PRESENT)
    both = CacheObserved(
        claim_uid="u",
        fetches=(fetched,),
        metadata=(read,),
        results={**results, "f": FetchResult(model=ModelFacts(parameters=13_015_864_320))},
    )
    assert compute_fetched_facts(both, UNKNOWN) == ModelFacts(parameters=13_015_864_320)


FAILED_AT = "2026-01-02T03:00:00Z"
FAILED_TIME = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(1, 30), (2, 60), (3, 120), (4, 240), (5, 480), (6, 600), (7, 600), (400, 600)]
)
def test_retries_back_off_from_30_seconds_doubling_to_10_minutes(attempt: int, seconds: float) -> None:
    assert compute_retry_delay(attempt) == seconds


@pytest.mark.parametrize(
    ("result", "retried"),
    [
        pytest.param(None, True, id="no result (killed, OOM, deadline): retried"),
        pytest.param(FetchResult(error="SourceUnavailable", message="503", exit_code=1), True, id="503"),
        pytest.param(FetchResult(error="Incomplete", exit_code=1), True, id="a download ended early"),
        pytest.param(FetchResult(error="ChecksumMismatch", exit_code=3), True, id="corrupt transfer"),
        pytest.param(FetchResult(error="NotFound", message="401", exit_code=5), False, id="401/404: not"),
        pytest.param(FetchResult(error="InsufficientSpace", exit_code=4), False, id="disk too small: not"),
        pytest.param(FetchResult(error="Unsupported", exit_code=2), False, id="unsupported URI: not"),
        pytest.param(FetchResult(error="BadHeader", exit_code=1), False, id="broken header: not"),
        pytest.param(FetchResult(error="Whatever", exit_code=2), False, id="a usage exit code: not"),
    ],
)
def test_which_failures_are_retried(result: FetchResult | None, retried: bool) -> None:
    failed = ObservedFetch(
        "j", "n1", HF, WeightsState.FAILED, "BackoffLimitExceeded", attempt=3, failed_at=FAILED_AT
    )
    retry = compute_fetch_retry(failed, result, NOW)
    assert retry is not None
    assert retry.attempt == 3
    assert retry.at == (FAILED_TIME + timedelta(seconds=120) if retried else None)
    assert compute_fetch_retry(replace(failed, state=WeightsState.PRESENT), result, NOW) is None


def failed_fetch(
    node: str = "n1", attempt: int = 1, error: str = "SourceUnavailable"
) -> tuple[ObservedFetch, FetchResult]:
    name = fetch_job_name("ml", HF, node, attempt)
    return (
        ObservedFetch(
            name, node, HF, WeightsState.FAILED, "BackoffLimitExceeded", attempt=attempt, failed_at=FAILED_AT
        ),
        FetchResult(error=error, message="the Hub answered 503", exit_code=1),
    )


@pytest.mark.parametrize(
    ("seconds_after", "attempt", "error", "created", "deleted", "retry_at"),
    [
        pytest.param(29, 1, "SourceUnavailable", [], [], 30, id="before the backoff ends: look again then"),
        pytest.param(30, 1, "SourceUnavailable", [2], ["1"], None, id="due: attempt 2 replaces attempt 1"),
        pytest.param(100, 3, "SourceUnavailable", [], [], 120, id="attempt 3 waits 120 s"),
        pytest.param(10_000, 1, "NotFound", [], [], None, id="a 401/404 is not retried"),
    ],
)
def test_a_failed_fetch_is_retried_as_a_new_job_when_due(
    seconds_after: int, attempt: int, error: str, created: list[int], deleted: list[str], retry_at: int | None
) -> None:
    fetch, result = failed_fetch(attempt=attempt, error=error)
    observed = CacheObserved(
        claim_uid="u",
        volume_exists=True,
        directory_jobs=frozenset({directory_job_name("u", "n1")}),
        fetches=(fetch,),
        results={fetch.name: result},
    )
    now = FAILED_TIME + timedelta(seconds=seconds_after)
    plan = plan_weights(SETTINGS, spec(), "ml", ["n1"], observed, now=now)
    assert [j["metadata"]["name"] for j in plan.fetch_jobs] == [
        fetch_job_name("ml", HF, "n1", a) for a in created
    ]
    for job in plan.fetch_jobs:
        assert job["metadata"]["annotations"]["inferfleet.io/weights-attempt"] == str(attempt + 1)
    assert list(plan.delete_jobs) == ([fetch.name] if deleted else [])
    assert plan.retry_at == (None if retry_at is None else FAILED_TIME + timedelta(seconds=retry_at))


def test_a_failure_on_a_node_the_service_left_is_not_retried_and_a_replaced_attempt_goes() -> None:
    fetch, result = failed_fetch("n9")
    newer = ObservedFetch(fetch_job_name("ml", HF, "n1", 2), "n1", HF, WeightsState.FETCHING, attempt=2)
    older, _ = failed_fetch("n1")
    observed = CacheObserved(claim_uid="u", volume_exists=True, fetches=(fetch, older, newer),
                             results={fetch.name: result})  # fmt: skip
    plan = plan_weights(SETTINGS, spec(), "ml", ["n1"], observed, now=FAILED_TIME + timedelta(hours=1))
    assert plan.fetch_jobs == ()
    assert plan.delete_jobs == (older.name,)  # its retry exists (a delete that failed earlier)
    assert plan.retry_at is None


def test_a_failed_metadata_job_is_retried_while_the_size_is_still_unknown() -> None:
    name = metadata_job_name("ml", UNKNOWN)
    read = ObservedFetch(name, "", UNKNOWN, WeightsState.FAILED, "DeadlineExceeded", failed_at=FAILED_AT)
    observed = CacheObserved(claim_uid="u", volume_exists=True, metadata=(read,))
    due = FAILED_TIME + timedelta(seconds=30)
    plan = plan_weights(SETTINGS, unknown_spec(), "ml", [], observed, now=due, metadata=True)
    assert [j["metadata"]["name"] for j in plan.fetch_jobs] == [metadata_job_name("ml", UNKNOWN, 2)]
    assert plan.delete_jobs == (read.name,)
    known = plan_weights(SETTINGS, unknown_spec(), "ml", [], observed, now=due, metadata=False)
    assert (known.fetch_jobs, known.delete_jobs) == ((), ())


def test_status_weights_says_which_attempt_failed_and_when_the_next_starts() -> None:
    fetch, result = failed_fetch(attempt=2)
    gone, gone_result = failed_fetch("n2", error="NotFound")
    older, _ = failed_fetch(attempt=1)
    observed = CacheObserved(claim_uid="u", fetches=(older, fetch, gone),
                             results={fetch.name: result, gone.name: gone_result})  # fmt: skip
    weights = compute_node_weights(HF, observed, {"n1", "n2"}, None, NOW)
    assert weights is not None
    assert [(w.node, w.job) for w in weights] == [("n1", fetch.name), ("n2", gone.name)]  # the latest attempt
    assert weights[0].message == (
        "attempt 2 failed; attempt 3 at 2026-01-02T03:01:00Z: SourceUnavailable: the Hub answered 503"
    )
    assert weights[1].message is not None
    assert weights[1].message.startswith(
        "attempt 1 failed and is not retried (NotFound does not heal by itself)"
    )
    elsewhere = compute_node_weights(HF, observed, set(), None, NOW)
    assert elsewhere is not None
    assert elsewhere[0].message == "SourceUnavailable: the Hub answered 503"  # not wanted there: no retry


NOT_FOUND = FetchResult(error="NotFound", message="hf://acme/private-13b: no access", exit_code=5)
NOT_RETRIED = "attempt 1 failed and is not retried (NotFound does not heal by itself)"


@pytest.mark.parametrize(
    ("read", "result", "expected"),
    [
        pytest.param(None, None, MetadataFetch(), id="none yet"),
        pytest.param(
            ObservedFetch("m", "", UNKNOWN, WeightsState.FETCHING), None, MetadataFetch(job="m"), id="running"
        ),
        pytest.param(
            ObservedFetch("m", "", UNKNOWN, WeightsState.PRESENT),
            None,
            MetadataFetch(job="m", done=True),
            id="done",
        ),
        pytest.param(
            ObservedFetch("m", "", UNKNOWN, WeightsState.FAILED, "BackoffLimitExceeded", failed_at=FAILED_AT),
            NOT_FOUND,
            MetadataFetch(job="m", error="NotFound: hf://acme/private-13b: no access", retry=NOT_RETRIED),
            id="failed for good",
        ),
        pytest.param(
            ObservedFetch(
                "m", "", UNKNOWN, WeightsState.FAILED, "DeadlineExceeded: slow", failed_at=FAILED_AT
            ),
            None,
            MetadataFetch(
                job="m",
                error="DeadlineExceeded: slow",
                retry="attempt 1 failed; attempt 2 at 2026-01-02T03:00:30Z",
            ),
            id="failed, retried",
        ),
    ],
)
def test_where_the_metadata_read_stands(
    read: ObservedFetch | None, result: FetchResult | None, expected: MetadataFetch
) -> None:
    observed = CacheObserved(
        claim_uid="u", metadata=(read,) if read else (), results={"m": result} if result else {}
    )
    assert compute_metadata_fetch(observed, UNKNOWN, NOW) == expected


GPUS = {"NVIDIA-L4": ProductCapacity("NVIDIA-L4", gpu_memory_gib=24.0, gpus_per_node=8, nodes=2)}


PENDING, FAILED = "ModelMetadataPending", "ModelMetadataFailed"
SET_IT = "set spec.model.parametersBillions"


@pytest.mark.parametrize(
    ("metadata", "reason", "says"),
    [
        pytest.param(
            None,
            PENDING,
            [
                "is not one of inferfleet's known models",
                SET_IT,
                "turn on the node weights cache (chart value",
            ],
            id="cache off: set it, or turn the cache on",
        ),
        pytest.param(
            MetadataFetch(),
            PENDING,
            ["a Job is reading hf://acme/private-13b's config.json"],
            id="Job coming",
        ),
        pytest.param(
            MetadataFetch(job="m", attempt=2),
            PENDING,
            ["Job m is reading", "attempt 2, no weights are downloaded", f"or {SET_IT}"],
            id="the Job runs",
        ),
        pytest.param(
            MetadataFetch(job="m", error="NotFound: no access", retry=NOT_RETRIED),
            FAILED,
            [
                f"reading the facts of hf://acme/private-13b from its files failed (Job m, {NOT_RETRIED}): "
                "NotFound: no access; fix the source or its credentials",
                SET_IT,
            ],
            id="the Job failed: why, and what ends it",
        ),
        pytest.param(
            MetadataFetch(job="m", done=True),
            PENDING,
            ["hold no config.json it could read", SET_IT],
            id="read, but nothing there",
        ),
    ],
)
def test_a_model_nobody_knows_waits_and_says_how_its_facts_are_coming(
    metadata: MetadataFetch | None, reason: str, says: list[str]
) -> None:
    plan = plan_service(OWNER, unknown_spec(), GPUS, metadata=metadata)
    assert plan.blocked is not None
    assert plan.blocked.reason == reason
    for text in says:
        assert text in plan.blocked.message
    assert plan.children == []


def test_a_pvc_model_nobody_knows_is_not_told_to_turn_the_cache_on() -> None:
    plan = plan_service(OWNER, unknown_spec("pvc://models/x"), GPUS)
    assert plan.blocked is not None
    assert "cache" not in plan.blocked.message


def test_once_the_metadata_job_read_the_files_the_model_is_placed() -> None:
    read = ObservedFetch("m", "", UNKNOWN, WeightsState.PRESENT)
    facts = ModelFacts(parameters=13_000_000_000, dtype=Dtype.BFLOAT16)
    observed = CacheObserved(claim_uid="u", metadata=(read,), results={"m": FetchResult(model=facts)})
    plan = plan_service(
        OWNER, unknown_spec(), GPUS, model_files=compute_fetched_facts(observed, UNKNOWN),
        metadata=compute_metadata_fetch(observed, UNKNOWN, NOW),
    )  # fmt: skip
    assert plan.blocked is None
    assert plan.shard_plan is not None
    assert plan.shard_plan.gpus_per_pod >= 2  # 26 GB of bf16 on 24 GiB GPUs
    assert plan.model is not None
    assert plan.model.source == "Files"


# --- The volume of a deleted claim ---


def released(volume: dict[str, Any], phase: str = "Released") -> dict[str, Any]:
    return {**volume, "metadata": {**volume["metadata"], "uid": "pv-uid"}, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("volume", "current_claim", "goes"),
    [
        pytest.param(
            released(build_cache_volume(SETTINGS.root, "ml", "u1")), None, True, id="namespace gone"
        ),
        pytest.param(released(build_cache_volume(SETTINGS.root, "ml", "u1")), "u2", True, id="claim remade"),
        pytest.param(
            released(build_cache_volume(SETTINGS.root, "ml", "u1"), "Bound"), "u1", False, id="still bound"
        ),
        pytest.param(
            released(build_cache_volume(SETTINGS.root, "ml", "u1")), "u1", False, id="its claim is back"
        ),
        pytest.param(
            released(build_cache_volume("/elsewhere", "ml", "u1")), None, False, id="not under our root"
        ),
    ],
)
def test_a_released_cache_volume_of_ours_goes_with_its_directories(
    volume: dict[str, Any], current_claim: str | None, goes: bool
) -> None:
    made = {directory_job_name("u1", "n1"), directory_job_name("u1", "n3"), directory_job_name("u2", "n2")}
    cleanup = plan_volume_cleanup(SETTINGS, volume, current_claim, ["n1", "n2", "n3"], made)
    if not goes:
        assert cleanup == VolumeCleanup()
        return
    assert cleanup.volume == "inferfleet-cache-u1"
    assert cleanup.directory_jobs == (directory_job_name("u1", "n1"), directory_job_name("u1", "n3"))
    assert [j["metadata"]["name"] for j in cleanup.cleanup_jobs] == [
        cleanup_job_name("u1", "n1"),
        cleanup_job_name("u1", "n3"),
    ]


def test_a_hostpath_volume_with_our_name_is_never_ours_to_delete() -> None:
    volume = released(build_cache_volume(SETTINGS.root, "ml", "u1"))
    volume["spec"] = {**volume["spec"], "hostPath": {"path": "/"}}
    assert (
        plan_volume_cleanup(SETTINGS, volume, None, ["n1"], {directory_job_name("u1", "n1")})
        == VolumeCleanup()
    )


def test_the_cleanup_job_removes_only_the_claims_directory_on_its_node() -> None:
    job = build_cleanup_job(SETTINGS, "ml", "u1", "n1")
    assert job["metadata"]["namespace"] == "ops"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "n1"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    [container] = pod["containers"]
    assert container["command"][-1] == "/var/lib/inferfleet/models/ml.u1"
    assert container["command"][:2] == ["rm", "-rf"]


GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# job -> (its model-cache label, container, first word of its command, root hostPath type,
#         tolerations, ttlSecondsAfterFinished)
ROOT_JOBS: dict[str, tuple[dict[str, Any], tuple[str, str, str, str, list[dict[str, Any]], int | None]]] = {
    "the directory is made where the root may not exist yet, and kept for the index": (
        build_directory_job(SETTINGS, "ml", "u1", "n1", [GPU_TAINT]),
        ("directory", "mkdir", "sh", "DirectoryOrCreate", [GPU_TAINT], None),
    ),
    "the directory is removed only from a root that exists, whatever the taints": (
        build_cleanup_job(SETTINGS, "ml", "u1", "n1"),
        ("cleanup", "remove", "rm", "Directory", [{"operator": "Exists"}], 86400),
    ),
}


@pytest.mark.parametrize("case", ROOT_JOBS)
def test_the_jobs_on_the_cache_root(case: str) -> None:
    job, (label, container_name, program, root_type, tolerations, ttl) = ROOT_JOBS[case]
    labels = {"inferfleet.io/model-cache": label}
    assert job["metadata"]["labels"] == job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"] == {"inferfleet.io/weights-node": "n1"}
    assert job["spec"].get("ttlSecondsAfterFinished") == ttl
    pod = job["spec"]["template"]["spec"]
    assert pod["tolerations"] == tolerations
    assert pod["volumes"] == [{"name": "root", "hostPath": {"path": SETTINGS.root, "type": root_type}}]
    [container] = pod["containers"]
    assert (container["name"], container["command"][0]) == (container_name, program)
    assert container["command"][-1] == "/var/lib/inferfleet/models/ml.u1"
    no_privileges = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["securityContext"] == no_privileges


@pytest.mark.parametrize("kind", ["fetch", "metadata"])
def test_an_exit_code_no_rerun_heals_fails_the_job_without_more_pods(kind: str) -> None:
    s = unknown_spec() if kind == "metadata" else spec()
    job = (
        build_metadata_job(s, "ml", "u", SETTINGS)
        if kind == "metadata"
        else build_fetch_job(s, "ml", "n1", "u", SETTINGS, [])
    )
    [rule] = job["spec"]["podFailurePolicy"]["rules"]
    assert rule == {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 4, 5]}}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # what podFailurePolicy needs
