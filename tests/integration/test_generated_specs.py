"""Bad input at scale: generated InferenceService specs through the real API server.

Every one is either refused by the API server with a message, or accepted and then reported by
the operator with a Ready condition carrying a reason; the operator never crashes and a healthy
service next to them is untouched.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.integration.test_reconcile import GROUP, PLURAL, VERSION, create, example, read, wait_ready
from tests.support import status_condition

pytestmark = pytest.mark.usefixtures("crds_installed")

# Where a user is most likely to go wrong, and the shapes a value can take there.
PATHS = [
    ("replicas",), ("model", "name"), ("model", "parametersBillions"), ("model", "dtype"),
    ("model", "maxModelLen"), ("model", "quantization"), ("model", "architecture", "numAttentionHeads"),
    ("model", "architecture", "numKeyValueHeads"), ("engine", "kind"), ("engine", "image"),
    ("engine", "maxConcurrentRequests"), ("engine", "args"), ("accelerator", "product"),
    ("accelerator", "memoryGiB"), ("accelerator", "gpusPerNode"), ("sharding", "mode"),
    ("sharding", "tensorParallel"), ("sharding", "pipelineParallel"), ("sharding", "topologyKey"),
    ("scaling", "minReplicas"), ("scaling", "maxReplicas"), ("scaling", "targetQueueDepth"),
    ("scaling", "scaleToZeroAfterSeconds"), ("scheduling", "nodeSelector"), ("scheduling", "tolerations"),
    ("scheduling", "priorityClassName"), ("unknownField",),
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, 1, 2, 3, 4, 6, 8, 16, 405, 671, 1_000_000]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=20),
    st.sampled_from(["vllm", "sglang", "tgi", "custom", "bfloat16", "fp8", "int4", "auto", "manual",
                     "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4", "", "x" * 300]),
)  # fmt: skip
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=8), SCALARS, max_size=3)
)
EDITS = st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=4)


def edited_spec(edits: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(example("llama-3.1-8b-vllm.yaml")["spec"])
    spec["engine"].pop("env", None)  # no Secret in the test namespace
    for path, value in edits:
        node = spec
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return spec


def reported(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    obj = read(cluster, namespace, name)
    ready = status_condition(obj, "Ready")
    current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
    return obj if current and ready.get("reason") and ready.get("message") else None


def test_generated_specs_are_refused_or_reported_and_nothing_else_is_harmed(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    op = run_operator(namespaces=[namespace])
    pid = op.pid
    canary = example("llama-3.1-8b-vllm.yaml")
    canary["metadata"] = {"name": "canary"}
    canary["spec"]["engine"].pop("env", None)
    create(cluster, namespace, canary)
    wait_ready(cluster, namespace, "canary")
    canary_generation = cluster.apps.read_namespaced_deployment("canary", namespace).metadata.generation
    outcomes = {"refused": 0, "reported": 0}

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
    @given(edits=EDITS)
    def check(edits: list[tuple[tuple[str, ...], Any]]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                "metadata": {"name": "generated"}, "spec": edited_spec(edits)}  # fmt: skip
        refusal = try_create(cluster, namespace, body)
        if refusal is not None:
            status, message = refusal
            assert status in (400, 422), (status, message)
            assert "spec" in message or "InferenceService" in message, message
            outcomes["refused"] += 1
            return
        try:
            obj = wait_for(
                lambda: reported(cluster, namespace, "generated"),
                timeout=30,
                what=f"a Ready condition with a reason for {json.dumps(body['spec'])[:400]}",
            )
            assert status_condition(obj, "Ready")["reason"][0].isupper()
            outcomes["reported"] += 1
        finally:
            cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "generated")
            wait_for(lambda: not exists_generated(cluster, namespace), timeout=30, what="generated deleted")

    check()
    print(f"generated specs: {outcomes}")
    assert outcomes["refused"] > 0
    assert outcomes["reported"] > 0
    assert op.pid == pid
    assert op.healthy()
    assert read(cluster, namespace, "canary")["status"]["phase"] == "Ready"
    assert (
        cluster.apps.read_namespaced_deployment("canary", namespace).metadata.generation == canary_generation
    )


def try_create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> tuple[int, str] | None:
    """None when the API server accepted the object, else (HTTP status, its message)."""
    try:
        create(cluster, namespace, body)
    except ApiException as e:
        return e.status, json.loads(e.body)["message"] if e.body else str(e.reason)
    return None


def exists_generated(cluster: Cluster, namespace: str) -> bool:
    try:
        read(cluster, namespace, "generated")
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True
