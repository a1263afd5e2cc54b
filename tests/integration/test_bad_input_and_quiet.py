"""Bad input is refused early or reported with a condition, and a settled fleet costs no writes."""

from __future__ import annotations

import copy
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import watch

from inferfleet.localcluster.binaries import locate_binaries
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.integration.test_operator_metrics import scrape
from tests.integration.test_reconcile import GROUP, PLURAL, VERSION, create, read, small_service, wait_ready

pytestmark = pytest.mark.usefixtures("crds_installed")


def with_changes(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """small_service(name) with spec fields set by dotted path; "metadata.name" renames it."""
    body = small_service(name)
    for path, value in changes.items():
        if path == "metadata.name":
            body["metadata"]["name"] = value
            continue
        *parents, leaf = path.split(".")
        node = body["spec"]
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return body


SECRET = {"secretKeyRef": {"name": "hf", "key": "token"}}
ARCH_12_HEADS = {"numLayers": 12, "hiddenSize": 768, "numAttentionHeads": 12, "numKeyValueHeads": 4}
NAME_MESSAGE = (
    "metadata.name must be a DNS-1035 label of at most 63 characters (lowercase letters, digits and "
    "'-', starting with a letter and ending with a letter or digit) so that its Services, pods and "
    "labels are valid"
)

# Each rejected by the API server (schema or CEL) with this text in kubectl's error.
REJECTED: list[tuple[dict[str, Any], str]] = [
    (
        {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must be less than or equal to maxReplicas",
    ),
    ({"sharding": {"mode": "manual"}}, "tensorParallel is required in manual mode"),
    ({"sharding": {"mode": "manual", "tensorParallel": 3}}, "tensorParallel must be a power of two"),
    ({"sharding": {"tensorParallel": 2}}, "tensorParallel and pipelineParallel are set only in manual mode"),
    ({"engine": {"kind": "custom"}}, "image is required when kind is custom"),
    ({"model.dtype": "fp4"}, 'Unsupported value: "fp4"'),
    ({"engine.kind": "llamacpp"}, 'Unsupported value: "llamacpp"'),
    ({"model.source": "ftp://models/llama"}, "should match"),
    ({"model.parametersBillions": 0}, "should be greater than 0"),
    ({"model.parametersBillions": -8}, "should be greater than 0"),
    ({"engine.port": 70000}, "should be less than or equal to 65535"),
    ({"replicas": -1}, "should be greater than or equal to 0"),
    ({"engine.maxConcurrentRequests": 0}, "should be greater than or equal to 1"),
    ({"model.architecture.numKeyValueHeads": 6}, "numAttentionHeads must be divisible by numKeyValueHeads"),
    ({"scaling": {"targetQueueDepth": 0}}, "should be greater than 0"),
    ({"model": None}, "spec.model: Required value"),
    ({"accelerator.gpusPerNode": 0}, "should be greater than or equal to 1"),
    (
        {"model.source": "pvc://weights/llama", "model.cache": {"prefetchNodes": 1}},
        "cache.prefetchNodes needs an hf:// or s3:// source",
    ),
    ({"model.cache": {"prefetchNodes": 17}}, "should be less than or equal to 16"),
    (
        {"engine.securityContext": {"seccompProfile": {"type": "Localhost"}}},
        "localhostProfile is set exactly when type is Localhost",
    ),
    ({"engine.securityContext": {"runAsUser": -1}}, "should be greater than or equal to 0"),
    ({"engine.securityContext": {"privileged": True}}, "unknown field"),
    (
        {"scheduling": {"tolerations": [{"key": "sku", "operator": "Exists", "value": "gpu"}]}},
        "value must be unset when operator is Exists",
    ),
    ({"scheduling": {"tolerations": [{"value": "gpu"}]}}, "operator must be Exists when key is unset"),
    (
        {"scheduling": {"tolerations": [{"key": "sku", "effect": "NoSchedule", "tolerationSeconds": 30}]}},
        "tolerationSeconds is set only with effect NoExecute",
    ),
    ({"scheduling": {"tolerations": [{"key": "sku", "effect": "NoEvict"}]}}, 'Unsupported value: "NoEvict"'),
    (
        {"scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}},
        "set the GPU product with spec.accelerator.product",
    ),
    # Names that cannot name the Service and label the children.
    ({"metadata.name": "llama.v3"}, NAME_MESSAGE),
    ({"metadata.name": "1llama"}, NAME_MESSAGE),
    ({"metadata.name": "l" * 64}, NAME_MESSAGE),
    # Absurd sizes and windows.
    ({"replicas": 1001}, "spec.replicas in body should be less than or equal to 1000"),
    ({"replicas": 2**31}, "spec.replicas in body should be less than or equal to 1000"),
    ({"replicas": "3"}, "spec.replicas in body must be of type integer"),
    (
        {"scaling": {"maxReplicas": 100000}},
        "spec.scaling.maxReplicas in body should be less than or equal to 1000",
    ),
    (
        {"scaling": {"minReplicas": 1001}},
        "spec.scaling.minReplicas in body should be less than or equal to 1000",
    ),
    (
        {"scaling": {"scaleDownStabilizationSeconds": 86400}},
        "spec.scaling.scaleDownStabilizationSeconds in body should be less than or equal to 3600",
    ),
    (
        {"scaling": {"scaleUpStabilizationSeconds": 3601}},
        "spec.scaling.scaleUpStabilizationSeconds in body should be less than or equal to 3600",
    ),
    (
        {"scaling": {"scaleToZeroAfterSeconds": 10**9}},
        "spec.scaling.scaleToZeroAfterSeconds in body should be less than or equal to 86400",
    ),
    ({"model.parametersBillions": "70"}, "spec.model.parametersBillions in body must be of type number"),
    (
        {"model.parametersBillions": 10**7},
        "spec.model.parametersBillions in body should be less than or equal to",
    ),
    (
        {"engine.securityContext": {"runAsUser": 2**31}},
        "spec.engine.securityContext.runAsUser in body should be less than or equal to 2147483647",
    ),
    (
        {"engine.maxConcurrentRequests": 2**31},
        "spec.engine.maxConcurrentRequests in body should be less than or equal to 65536",
    ),
    # Lengths and counts.
    ({"engine.image": "r/" + "x" * 511}, "spec.engine.image: Too long"),
    ({"engine.args": ["-v"] * 129}, "spec.engine.args: Too many: 129: must have at most 128 items"),
    ({"engine.args": ["x" * 4097]}, "spec.engine.args[0]: Too long"),
    (
        {"engine.env": [{"name": f"E{i}"} for i in range(129)]},
        "spec.engine.env: Too many: 129: must have at most 128 items",
    ),
    ({"model.name": "m" * 254}, "spec.model.name: Too long"),
    (
        {"scheduling": {"tolerations": [{"key": "k"}] * 65}},
        "spec.scheduling.tolerations: Too many: 65: must have at most 64 items",
    ),
    (
        {"scheduling": {"nodeSelector": {f"k{i}": "v" for i in range(65)}}},
        "spec.scheduling.nodeSelector: Too many",
    ),
    ({"scheduling": {"nodeSelector": {"pool": "v" * 64}}}, "spec.scheduling.nodeSelector.pool: Too long"),
    # Env: exclusive sources, unique names, the operator's own names.
    (
        {"engine.env": [{"name": "HF_TOKEN", "value": "x", "valueFrom": SECRET}]},
        "value and valueFrom are exclusive: set one of them",
    ),
    (
        {"engine.env": [{"name": "A", "value": "1"}, {"name": "B"}, {"name": "A", "value": "2"}]},
        "env sets A more than once",
    ),
    (
        {"engine.env": [{"name": "HF_HOME", "value": "/cache"}]},
        "name HF_HOME is set by inferfleet, use another name",
    ),
    ({"engine.env": [{"name": "LEADER_ADDRESS", "value": "x"}]}, "name LEADER_ADDRESS is set by inferfleet"),
    (
        {"engine.env": [{"name": "A", "valueFrom": {}}]},
        "valueFrom sets exactly one of secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef",
    ),
    (
        {"engine.env": [{"name": "A", "valueFrom": {"vaultRef": {"path": "x"}}}]},
        'unknown field "spec.engine.env[0].valueFrom.vaultRef"',
    ),
    ({"engine.env": [{"name": "1A", "value": "x"}]}, "spec.engine.env[0].name in body should match"),
    # Flags and ports inferfleet generates.
    (
        {"engine.args": ["--trust-remote-code", "--tensor-parallel-size", "8"]},
        "args must not set --tensor-parallel-size: inferfleet sets it for vllm",
    ),
    ({"engine.args": ["--port=9000"]}, "args must not set --port: inferfleet sets it for vllm"),
    (
        {"engine.args": ["--max_num_seqs", "8"]},
        "args must not set --max-num-seqs: inferfleet sets it for vllm",
    ),
    (
        {"engine": {"kind": "sglang", "args": ["--tp-size", "2"]}},
        "args must not set --tp-size: inferfleet sets it for sglang",
    ),
    (
        {"engine": {"kind": "tgi", "args": ["--num-shard=2"]}},
        "args must not set --num-shard: inferfleet sets it for tgi",
    ),
    ({"engine.port": 6379}, "port 6379 is used by inferfleet for vllm multi-node groups, choose another"),
    # Tensor parallelism the model's heads refuse.
    (
        {"model.architecture": ARCH_12_HEADS, "sharding": {"mode": "manual", "tensorParallel": 8}},
        "sharding.tensorParallel must divide model.architecture.numAttentionHeads",
    ),
    (
        {
            "model.architecture": {**ARCH_12_HEADS, "numKeyValueHeads": 6},
            "sharding": {"mode": "manual", "tensorParallel": 4},
        },
        "sharding.tensorParallel and model.architecture.numKeyValueHeads: one must be a multiple of",
    ),
]

# Accepted by the API server; the operator reports them with this Ready reason and creates nothing.
TOO_BIG = {
    "model.parametersBillions": 405.9,
    "model.dtype": "float32",
    "sharding": {"mode": "manual", "tensorParallel": 4},
}
TGI_405B = {"model.parametersBillions": 405.9, "engine.kind": "tgi", "engine.image": None,
            "accelerator": {"product": "NVIDIA-H100-80GB-HBM3"}}  # fmt: skip
REPORTED = [
    ({"accelerator": {"product": "NVIDIA-B200"}}, "NoMatchingNodes"),
    ({"scheduling": {"nodeSelector": {"example.com/pool": "no-such-pool"}}}, "NoMatchingNodes"),
    (TOO_BIG, "ModelDoesNotFit"),
    (TGI_405B, "EngineNotMultiNode"),
    (  # no architecture given: the one assumed for 3B parameters has 24 heads
        {
            "model.architecture": None,
            "model.parametersBillions": 3,
            "sharding": {"mode": "manual", "tensorParallel": 16},
        },
        "InvalidSpec",
    ),
    ({"replicas": 65}, "PolicyViolation"),
    ({"scheduling": {"priorityClassName": "system-cluster-critical"}}, "PolicyViolation"),
    ({"engine.securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "PolicyViolation"),
]


def kubectl_apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    kubectl = [str(locate_binaries().kubectl), "--kubeconfig", str(cluster.kubeconfig)]
    command = [*kubectl, "apply", "-n", namespace, "-f", "-"]
    return subprocess.run(command, input=yaml.safe_dump(body), capture_output=True, text=True)


def test_a_table_of_invalid_specs_is_refused_or_reported_and_the_operator_keeps_serving(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    op = run_operator(namespaces=[namespace])
    for i, (changes, message) in enumerate(REJECTED):
        result = kubectl_apply(cluster, namespace, with_changes(f"bad-{i}", copy.deepcopy(changes)))
        assert result.returncode != 0, f"case {i} was accepted: {changes}"
        assert message in result.stderr, f"case {i}: {result.stderr}"
    for i, (changes, reason) in enumerate(REPORTED):
        name = f"reported-{i}"
        result = kubectl_apply(cluster, namespace, with_changes(name, copy.deepcopy(changes)))
        assert result.returncode == 0, result.stderr

        def ready_reason(name: str = name) -> str | None:
            cond = [
                c
                for c in read(cluster, namespace, name).get("status", {}).get("conditions", [])
                if c["type"] == "Ready"
            ]
            return cond[0]["reason"] if cond else None

        assert wait_for(ready_reason, timeout=60, what=f"{name}'s condition") == reason
        assert not cluster.apps.list_namespaced_deployment(
            namespace, label_selector=f"inferfleet.io/service={name}"
        ).items
    create(cluster, namespace, small_service("still-fine"))
    wait_ready(cluster, namespace, "still-fine")
    assert op.healthy()
    assert "Traceback" not in op.log_text()


def test_twenty_services_become_ready_and_a_quiet_minute_costs_no_writes(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    op = run_operator(namespaces=[namespace])
    names = [f"svc-{i:02d}" for i in range(20)]
    for name in names:
        body = small_service(name, product="NVIDIA-A100-SXM4-40GB")  # 1 GPU each: 20 of the 48 A100s
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    for name in names:
        wait_ready(cluster, namespace, name, timeout=120)

    def writes() -> float:
        return sum(v for (metric, _), v in scrape(op).items() if metric == "inferfleet_kube_writes_total")

    before = writes()
    changes: list[str] = []

    def record(list_fn: Callable[..., Any], *args: Any) -> None:
        for event in watch.Watch().stream(list_fn, *args, timeout_seconds=60):
            obj = event["object"]
            name = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
            if event["type"] != "ADDED":  # the stream opens with an ADDED per existing object
                changes.append(f"{event['type']} {name}")

    services = (cluster.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
    watchers = [
        threading.Thread(target=record, args=services),
        threading.Thread(target=record, args=(cluster.apps.list_namespaced_deployment, namespace)),
    ]
    for t in watchers:
        t.start()
    for t in watchers:
        t.join()  # a quiet minute: each watch ends after 60 s
    assert changes == []
    assert writes() == before
