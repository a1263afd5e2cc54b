"""What an engine pod's `wait-for-weights` init container waits for on the local cluster, and when
the nodes hold it (localcluster/weights_wait.py), from the operator's own pods and Jobs."""

from __future__ import annotations

from typing import Any

import yaml

from inferfleet.api import InferenceServiceSpec
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.weights_wait import build_wait_key, compute_present
from inferfleet.planning.children import build_cached_pod
from inferfleet.planning.weights_jobs import CacheSettings, build_fetch_job, build_metadata_job
from inferfleet.planning.weights_naming import compute_cache_key, compute_ref_file
from inferfleet.planning.weights_nodes import CachedCopy, build_evict_job

SOURCE, OTHER = "hf://meta-llama/Llama-3.1-8B-Instruct", "hf://other/model"
SETTINGS = CacheSettings(root="/var/lib/inferfleet/models", image="inferfleet:test", namespace="system")


def spec(source: str = SOURCE) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": "m", "source": source, "parametersBillions": 8},
            "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0"},
            "accelerator": {"product": "NVIDIA-L4"},
        }
    )


def engine_pod(source: str = SOURCE, node: str | None = "n1") -> dict[str, Any]:
    engine = {"name": "engine", "image": "e", "args": ["--model", "x"], "volumeMounts": []}
    cached = build_cached_pod({"containers": [engine], "volumes": []}, spec(source), SETTINGS.image)
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": cached | {"nodeName": node}}


def completed(job: dict[str, Any], at: str) -> dict[str, Any]:
    return job | {"status": {"conditions": [{"type": "Complete", "status": "True"}], "completionTime": at}}


def fetch(node: str, source: str = SOURCE, at: str | None = "2026-01-01T00:00:10Z") -> dict[str, Any]:
    job = build_fetch_job(spec(source), "ns", node, "claim", SETTINGS, [])
    return job if at is None else completed(job, at)


def key(node: str, source: str = SOURCE) -> tuple[str, str, str, str]:
    return ("ns", node, compute_cache_key(source), compute_ref_file(source))


def test_a_cached_pod_waits_for_its_sources_copy_on_its_own_node() -> None:
    assert build_wait_key(engine_pod()) == key("n1")
    assert build_wait_key(engine_pod(OTHER, "n2")) == key("n2", OTHER)
    assert build_wait_key(engine_pod(node=None)) is None  # not bound: no node to wait on yet
    assert build_wait_key(engine_pod("pvc://weights/llama")) is None  # not cached: no wait container


def test_a_node_holds_a_copy_once_its_fetch_completed_and_until_an_eviction_completed_after_it() -> None:
    assert compute_present([fetch("n1", at=None)]) == frozenset()  # still fetching
    assert compute_present([fetch("n1"), fetch("n2", OTHER)]) == {key("n1"), key("n2", OTHER)}
    copy = CachedCopy("ns", SOURCE, "n1", 1, "2026-01-01T00:00:10Z")
    evicted = completed(build_evict_job(copy, "claim", SETTINGS), "2026-01-01T00:00:20Z")
    assert compute_present([fetch("n1"), evicted, fetch("n2")]) == {key("n2")}
    fetched_again = fetch("n1", at="2026-01-01T00:00:30Z")
    assert compute_present([fetch("n1"), evicted, fetched_again]) == {key("n1")}
    metadata = completed(build_metadata_job(spec(), "ns", "claim", SETTINGS), "2026-01-01T00:00:05Z")
    assert compute_present([metadata]) == frozenset()  # a metadata read fetches no weights


def test_the_kwok_config_delays_only_weights_fetches_and_only_when_asked() -> None:
    def delay(cluster: LocalCluster) -> dict[str, Any]:
        stages = [d for d in yaml.safe_load_all(cluster._kwok_config()) if d.get("kind") == "Stage"]
        [stage] = [s for s in stages if s["metadata"]["name"] == "pod-complete"]
        return dict(stage["spec"]["delay"])

    assert delay(LocalCluster())["durationMilliseconds"] == 0
    assert delay(LocalCluster())["durationFrom"]["expressionFrom"].endswith('then "0ms" else empty end')
    query = delay(LocalCluster(fetch_seconds=16))["durationFrom"]["expressionFrom"]
    assert query.startswith('if .metadata.labels["inferfleet.io/model-cache"] == "fetch"')
    assert '.metadata.labels["inferfleet.io/weights-action"] == null' in query
    assert query.endswith('then "16000ms" else empty end')
