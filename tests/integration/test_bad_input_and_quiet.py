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
    body = small_service(name)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = body["spec"]
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return body


# Each rejected by the API server (schema or CEL) with this text in kubectl's error.
REJECTED = [
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
