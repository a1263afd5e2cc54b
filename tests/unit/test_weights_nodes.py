"""The node weights cache across services: prefetch nodes, warm node labels, LRU eviction."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec, ShardPlan
from inferfleet.api.status import WeightsState
from inferfleet.planning.children import Owner, build_cached_template, build_deployment, build_pod_spec
from inferfleet.planning.inventory import GpuNode, Taint
from inferfleet.planning.placement import BoundPod
from inferfleet.planning.weights_jobs import CacheSettings
from inferfleet.planning.weights_naming import compute_warm_label, evict_job_name, fetch_job_name
from inferfleet.planning.weights_nodes import (
    CachedCopy,
    build_evict_job,
    compute_cached_copies,
    compute_copy_usage,
    compute_finished_evictions,
    compute_prefetch_nodes,
    plan_evictions,
    plan_warm_labels,
)
from inferfleet.planning.weights_observed import FetchResult, ObservedFetch, build_observed_fetch

L4 = "NVIDIA-L4"
HF = "hf://org/llama"
OTHER = "s3://models/qwen"
SETTINGS = CacheSettings(
    root="/var/lib/inferfleet/models", image="ghcr.io/inferfleet/inferfleet:1", namespace="ops"
)
GIB = 1 << 30


def spec(prefetch: int = 0, product: str | None = L4, **scheduling: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {
            "model": {
                "name": "llama",
                "source": HF,
                "parametersBillions": 8,
                "cache": {"prefetchNodes": prefetch},
            },
            "engine": {"kind": "vllm"},
            "accelerator": {"product": product} if product else {},
            "scheduling": scheduling,
        }
    )


def gpu_node(name: str, gpus: int = 8, product: str = L4, **kw: Any) -> GpuNode:
    return GpuNode(name=name, product=product, gpus=gpus, gpu_memory_gib=24.0, labels={}, **kw)


NODES = [
    gpu_node("n1"),
    gpu_node("n2"),
    gpu_node("n3"),
    gpu_node("n4", gpus=4),
    gpu_node("h1", product="H100"),
]


@pytest.mark.parametrize(
    ("count", "bound", "serving", "held", "gpus_per_pod", "expected"),
    [
        pytest.param(0, [], [], [], 1, [], id="none-asked"),
        pytest.param(2, [("n1", 6), ("n2", 2)], [], [], 1, ["n2", "n3"], id="most-free-gpus-first"),
        pytest.param(2, [], ["n1"], [], 1, ["n2", "n3"], id="never-a-serving-node-ties-by-name"),
        pytest.param(1, [], [], ["n4"], 1, ["n4"], id="a-held-node-with-room-stays"),
        pytest.param(1, [("n4", 4)], [], ["n4"], 1, ["n1"], id="a-full-held-node-gives-way"),
        pytest.param(3, [], [], [], 8, ["n1", "n2", "n3"], id="only-nodes-a-replica-fits-on"),
        pytest.param(9, [], [], [], 1, ["n1", "n2", "n3", "n4"], id="at-most-the-eligible-nodes"),
    ],
)
def test_prefetch_nodes(
    count: int,
    bound: list[tuple[str, int]],
    serving: list[str],
    held: list[str],
    gpus_per_pod: int,
    expected: list[str],
) -> None:
    pods = [BoundPod(node=n, gpus=g) for n, g in bound]
    assert compute_prefetch_nodes(spec(count), NODES, pods, gpus_per_pod, serving, held) == expected


def test_prefetch_skips_nodes_the_pods_may_not_use() -> None:
    nodes = [
        gpu_node("tainted", taints=(Taint("pool", "batch", "NoSchedule"),)),
        gpu_node("cordoned", cordoned=True),
        gpu_node("ok"),
    ]
    assert compute_prefetch_nodes(spec(3), nodes, [], 1, [], []) == ["ok"]


def fetch(
    node: str, source: str = HF, *, evict: bool = False, state: WeightsState = WeightsState.PRESENT
) -> tuple[str, ObservedFetch]:
    name = (evict_job_name if evict else fetch_job_name)("ml", source, node)
    return "ml", ObservedFetch(name, node, source, state, evict=evict, completed="2026-01-01T00:00:00Z")


def result(size: int) -> FetchResult:
    return FetchResult(bytes=size, revision="abc")


def test_copies_are_completed_fetches_with_their_size_and_last_use() -> None:
    fetches = [fetch("n1"), fetch("n2"), fetch("n3", state=WeightsState.FETCHING), fetch("n2", evict=True)]
    results = {("ml", f.name): result(5 * GIB) for _, f in fetches}
    used = {("ml", HF, "n1"): "2026-01-03T00:00:00Z", ("ml", HF, "n2"): "2025-12-31T00:00:00Z"}
    assert compute_cached_copies(fetches, results, used) == [
        CachedCopy("ml", HF, "n1", 5 * GIB, "2026-01-03T00:00:00Z"),
        CachedCopy(
            "ml", HF, "n2", 5 * GIB, "2026-01-01T00:00:00Z", evicting=True
        ),  # fetched after its last use
    ]


def test_a_copy_whose_size_is_unknown_is_labelled_but_never_counted_or_evicted() -> None:
    [unknown] = compute_cached_copies([fetch("n1")], {}, {})
    assert unknown.bytes is None
    assert plan_warm_labels({"n1": {}}, [unknown]) == {"n1": {compute_warm_label("ml", HF): "true"}}
    assert plan_evictions([unknown, A, B], set(), 10 * GIB, ["n1"]) == [A]


def test_usage_from_status_weights_pods_and_prefetch_marks() -> None:
    services: dict[tuple[str, str], dict[str, Any]] = {
        ("ml", "a"): {
            "spec": {"model": {"source": HF}},
            "status": {
                "weights": [
                    {"node": "n1", "lastUsed": "2026-01-02T00:00:00Z"},
                    {"node": "n2", "prefetch": True},
                ]
            },
        },
        ("ml", "b"): {
            "spec": {"model": {"source": HF}},
            "status": {"weights": [{"node": "n1", "lastUsed": "2026-01-05T00:00:00Z"}]},
        },
        ("other", "c"): {"spec": {"model": {"source": HF}}, "status": {}},
    }
    last, kept = compute_copy_usage(services, [(("other", "c"), "n3"), (("ml", "gone"), "n4")])
    assert last == {("ml", HF, "n1"): "2026-01-05T00:00:00Z"}
    assert kept == {("ml", HF, "n2"), ("other", HF, "n3")}


def copy(ns: str, source: str, node: str, gib: int, used: str, evicting: bool = False) -> CachedCopy:
    return CachedCopy(ns, source, node, gib * GIB, f"2026-01-0{used}T00:00:00Z", evicting)


A, B, C = copy("ml", HF, "n1", 10, "1"), copy("ml", OTHER, "n1", 10, "2"), copy("team", HF, "n1", 10, "3")


@pytest.mark.parametrize(
    ("copies", "kept", "budget", "expected"),
    [
        pytest.param([A, B, C], set(), 30, [], id="within-budget"),
        pytest.param([A, B, C], set(), 20, [A], id="least-recently-used-first"),
        pytest.param([A, B, C], set(), 10, [A, B], id="until-within-budget"),
        pytest.param([A, B, C], {A.key}, 20, [B], id="never-one-a-pod-uses"),
        pytest.param([A, B, C], {A.key, B.key, C.key}, 0, [], id="over-budget-but-all-in-use"),
        pytest.param(
            [A, copy("ml", OTHER, "n1", 30, "1"), C],
            set(),
            40,
            [copy("ml", OTHER, "n1", 30, "1")],
            id="tie-the-larger-goes",
        ),
        pytest.param(
            [copy("ml", HF, "n1", 10, "1", evicting=True), B, C],
            set(),
            20,
            [],
            id="evicting-no-longer-counts",
        ),
        pytest.param([A, B, copy("ml", HF, "n9", 50, "1")], set(), 20, [], id="only-the-nodes-looked-at"),
    ],
)
def test_evictions(copies: list[CachedCopy], kept: set[Any], budget: int, expected: list[CachedCopy]) -> None:
    assert plan_evictions(copies, kept, budget * GIB, ["n1"]) == expected


def test_warm_labels_follow_the_copies_and_drop_strays() -> None:
    mine, theirs = compute_warm_label("ml", HF), compute_warm_label("team", HF)
    stray = compute_warm_label("deleted-namespace", HF)
    labels = {"n1": {"zone": "a", theirs: "true", stray: "true"}, "n2": {mine: "true"}}
    copies = [A, C, copy("ml", HF, "n2", 10, "1")]
    assert plan_warm_labels(labels, copies, evicted=[copies[2]]) == {
        "n1": {mine: "true", stray: None},
        "n2": {mine: None},
    }
    assert mine != theirs  # per namespace: another namespace's copy is not this one's


def test_finished_evictions_take_both_jobs_away() -> None:
    fetches = [
        fetch("n1", evict=True),
        fetch("n2", evict=True, state=WeightsState.FETCHING),
        fetch("n3", evict=True),
    ]
    assert compute_finished_evictions(fetches, ["n1", "n2"]) == [
        ("ml", fetch_job_name("ml", HF, "n1"), evict_job_name("ml", HF, "n1"))
    ]


def test_the_evict_job_runs_on_its_node_restricted_in_the_copys_namespace() -> None:
    job = build_evict_job(A, "claim-uid", SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "ml"
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "n1"}
    assert pod["containers"][0]["args"][:3] == ["fetch-model", HF, "--evict"]
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"] == [
        {"name": "cache", "persistentVolumeClaim": {"claimName": "inferfleet-model-cache"}}
    ]
    observed = build_observed_fetch({**job, "status": {"succeeded": 1}})
    assert observed is not None
    assert (observed.evict, observed.node, observed.source) == (True, "n1", HF)


def test_single_pod_replicas_prefer_warm_nodes_by_a_label_not_by_node_names() -> None:
    owner = Owner(name="llama", namespace="ml", uid="u")
    shards = ShardPlan(tensor_parallel=1, pipeline_parallel=1, gpus_per_pod=1, pods_per_replica=1)
    deployment = build_cached_template(build_deployment(owner, spec(), shards), spec(), SETTINGS.image)
    preferred = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert list(preferred) == ["preferredDuringSchedulingIgnoredDuringExecution"]  # never required
    (term,) = preferred["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["preference"]["matchExpressions"] == [
        {"key": compute_warm_label("ml", HF), "operator": "Exists"}
    ]
    assert "affinity" not in build_pod_spec(spec(), shards, "llama")  # without the cache: as before


def test_a_finished_eviction_takes_every_attempt_of_the_copys_fetch_away() -> None:
    failed = ObservedFetch(fetch_job_name("ml", HF, "n1"), "n1", HF, WeightsState.FAILED)
    retried = ObservedFetch(fetch_job_name("ml", HF, "n1", 2), "n1", HF, WeightsState.PRESENT, attempt=2)
    fetches = [("ml", failed), ("ml", retried), fetch("n1", evict=True), fetch("n1", OTHER)]
    evicted = evict_job_name("ml", HF, "n1")
    assert compute_finished_evictions(fetches, ["n1"]) == [
        ("ml", fetch_job_name("ml", HF, "n1"), evicted),
        ("ml", fetch_job_name("ml", HF, "n1", 2), evicted),
    ]
