"""An applied InferenceService yields a Ready, GPU-scheduled engine Deployment (real cluster, operator)."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.binaries import locate_binaries
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.support import RESTRICTED_SECURITY_CONTEXT, restricted_namespace, status_condition

pytestmark = pytest.mark.usefixtures("crds_installed")

EXAMPLES = Path(__file__).parents[2] / "examples"
GROUP, VERSION, PLURAL = "inferfleet.io", "v1alpha1", "inferenceservices"


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def small_service(name: str, product: str = "NVIDIA-L4") -> dict[str, Any]:
    body = example("llama-3.1-8b-vllm.yaml")
    body["metadata"] = {"name": name}
    body["spec"]["accelerator"] = {"product": product}  # GPU memory and count come from the nodes
    return body


def create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def read(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def patch_spec(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}, _content_type="application/merge-patch+json"
    )


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any]:
        obj = read(cluster, namespace, name)
        status = obj.get("status", {})
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        if current and status.get("phase") == "Ready":
            return obj
        # Chained to the timeout error: the last status seen says why it never became Ready.
        conditions = [
            (c["type"], c["status"], c.get("reason"), c.get("message")) for c in status.get("conditions", [])
        ]
        raise AssertionError(f"phase={status.get('phase')} current={current} conditions={conditions}")

    return wait_for(ready, timeout=timeout, what=f"InferenceService {name} Ready")


def wait_ready_reason(
    cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 90
) -> dict[str, Any]:
    """The service's Ready condition once its reason is `reason`."""

    def reported() -> dict[str, Any]:
        ready = status_condition(read(cluster, namespace, name), "Ready")
        assert ready.get("reason") == reason, ready
        return ready

    return wait_for(reported, timeout=timeout, what=f"{name} Ready=False {reason}")


def engine_pods(cluster: Cluster, namespace: str, name: str) -> list[client.V1Pod]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"inferfleet.io/service={name}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def placed_nodes(obj: dict[str, Any]) -> int:
    """How many replicas status.placement names a node for."""
    return sum(1 for p in obj.get("status", {}).get("placement") or [] if any(p.get("nodes") or []))


def events_for(cluster: Cluster, namespace: str, name: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.name={name},involvedObject.kind=InferenceService"
    return cluster.core.list_namespaced_event(namespace, field_selector=selector).items


@pytest.fixture
def operator(run_operator: Callable[..., OperatorProcess], namespace: str) -> OperatorProcess:
    return run_operator(namespaces=[namespace])


def test_the_8b_example_becomes_ready_on_one_a100_with_the_right_args_and_probes(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    body = example("llama-3.1-8b-vllm.yaml")
    create(cluster, namespace, body)
    name = body["metadata"]["name"]
    wait_ready(cluster, namespace, name)

    # Watches of different kinds are not ordered: the Deployment's ready event can reach the
    # operator before the pod's, and then one status write says Ready a few milliseconds before
    # the next adds the pod's placement (seen in CI: 11 ms apart). Wait for the status that has both.
    def placed() -> dict[str, Any] | None:
        current = read(cluster, namespace, name)
        return current if "placement" in current.get("status", {}) else None

    obj = wait_for(placed, timeout=30, what="status.placement")

    status = obj["status"]
    assert status["readyReplicas"] == 1
    assert status["selector"] == f"inferfleet.io/service={name}"
    assert status["endpoint"] == f"http://{name}.{namespace}.svc:8000/v1"
    assert status["shardPlan"]["layout"] == "1x1"
    assert status_condition(obj, "Ready")["reason"] == "AllReplicasReady"

    [pod] = engine_pods(cluster, namespace, name)
    node = cluster.core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    zone = node.metadata.labels["topology.kubernetes.io/zone"]
    assert status["placement"] == [{"replica": 0, "domain": zone, "nodes": [pod.spec.node_name]}]
    engine = pod.spec.containers[0]
    assert engine.resources.limits == {"nvidia.com/gpu": "1"}
    assert engine.args[engine.args.index("--max-num-seqs") + 1] == "64"
    assert engine.args[engine.args.index("--served-model-name") + 1] == "llama-3.1-8b-instruct"
    assert engine.startup_probe.http_get.path == "/health"
    assert engine.readiness_probe.http_get.path == "/health"

    service = cluster.core.read_namespaced_service(name, namespace)
    assert service.spec.selector == {"inferfleet.io/service": name}
    assert client.PolicyV1Api(cluster.api_client).read_namespaced_pod_disruption_budget(name, namespace)
    managers = {
        m.manager for m in cluster.apps.read_namespaced_deployment(name, namespace).metadata.managed_fields
    }
    assert "inferfleet" in managers

    kubectl = [str(locate_binaries().kubectl), "--kubeconfig", str(cluster.kubeconfig)]
    listing = subprocess.run(
        [*kubectl, "get", "infsvc", "-n", namespace], capture_output=True, text=True, check=True
    )
    explain = subprocess.run([*kubectl, "explain", "infsvc.spec.model.parametersBillions"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert "Parameter count in billions" in explain.stdout
    header, row = listing.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "ENGINE", "TPXPP", "READY", "DESIRED", "QUEUE", "PHASE", "AGE"]
    assert row.split()[:5] == [name, "llama-3.1-8b-instruct", "vllm", "1x1", "1"]
    assert "Ready" in row.split()


def test_editing_the_spec_rolls_the_deployment_to_the_new_image_and_concurrency(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, small_service("roll"))
    wait_ready(cluster, namespace, "roll")

    patch_spec(
        cluster,
        namespace,
        "roll",
        {"engine": {"image": "vllm/vllm-openai:v0.11.1", "maxConcurrentRequests": 32}},
    )

    def rolled() -> bool:
        pods = engine_pods(cluster, namespace, "roll")
        return bool(pods) and all(
            p.spec.containers[0].image == "vllm/vllm-openai:v0.11.1"
            and p.spec.containers[0].args[p.spec.containers[0].args.index("--max-num-seqs") + 1] == "32"
            for p in pods
        )

    wait_for(rolled, timeout=90, what="the engine pods to run the new image and concurrency")
    obj = wait_ready(cluster, namespace, "roll")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2


def test_what_the_spec_no_longer_asks_for_leaves_the_children_the_operator_created(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Children are created (a name taken by another object must not be adopted), then applied: the
    create's field ownership becomes the apply's, or a removed env var would stay forever."""
    body = small_service("trim")
    body["spec"]["engine"]["env"] = [*body["spec"]["engine"].get("env", []), {"name": "EXTRA", "value": "1"}]
    create(cluster, namespace, body)
    wait_ready(cluster, namespace, "trim")
    deployment = cluster.apps.read_namespaced_deployment("trim", namespace)
    ours = [(m.manager, m.operation) for m in deployment.metadata.managed_fields if m.manager == "inferfleet"]
    assert ours == [("inferfleet", "Apply")]

    without = [e for e in body["spec"]["engine"]["env"] if e["name"] != "EXTRA"]
    patch_spec(cluster, namespace, "trim", {"engine": {"env": without}})

    def trimmed() -> bool:
        d = cluster.apps.read_namespaced_deployment("trim", namespace)
        return "EXTRA" not in [e.name for e in d.spec.template.spec.containers[0].env or []]

    wait_for(trimmed, timeout=60, what="EXTRA removed from the Deployment")


def test_hand_edits_and_deletion_of_the_deployment_are_undone(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, small_service("drift"))
    wait_ready(cluster, namespace, "drift")
    original = (
        cluster.apps.read_namespaced_deployment("drift", namespace).spec.template.spec.containers[0].image
    )

    hand_edit = {
        "spec": {"template": {"spec": {"containers": [{"name": "engine", "image": "evil/engine:latest"}]}}}
    }
    cluster.apps.patch_namespaced_deployment("drift", namespace, hand_edit)

    def image_restored() -> bool:
        d = cluster.apps.read_namespaced_deployment("drift", namespace)
        return d.spec.template.spec.containers[0].image == original and d.metadata.generation >= 3

    wait_for(image_restored, timeout=60, what="the operator to undo the hand edit of the image")

    old_uid = cluster.apps.read_namespaced_deployment("drift", namespace).metadata.uid
    cluster.apps.delete_namespaced_deployment("drift", namespace)

    def recreated() -> bool:
        try:
            return cluster.apps.read_namespaced_deployment("drift", namespace).metadata.uid != old_uid
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    wait_for(recreated, timeout=60, what="the operator to recreate the deleted Deployment")
    wait_ready(cluster, namespace, "drift")


def test_the_operator_resumes_after_a_restart_and_idle_reconciles_write_nothing(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    first = run_operator(namespaces=[namespace])
    create(cluster, namespace, small_service("resume"))
    ready = wait_ready(cluster, namespace, "resume")
    events_before = len(events_for(cluster, namespace, "resume"))
    first.stop()

    # While the operator is down the user scales up; the restarted operator must act on it.
    patch_spec(cluster, namespace, "resume", {"replicas": 2})
    second = run_operator(namespaces=[namespace])
    obj = wait_ready(cluster, namespace, "resume")
    assert obj["status"]["readyReplicas"] == 2
    assert len(engine_pods(cluster, namespace, "resume")) == 2

    # A restart with nothing to do changes nothing: same resourceVersion, no new Events.
    resumed = f"reconciled generation {obj['metadata']['generation']}"
    wait_for(lambda: resumed in second.log_text(), timeout=30, what="the operator to finish the scale-up")
    # The status converges from two watches: the Deployment's ready count and the pods' nodes
    # (status.placement) may arrive in either order, so Ready can be written before placement.
    wait_for(lambda: placed_nodes(read(cluster, namespace, "resume")) == 2, timeout=30,
             what="status.placement to name both replicas' nodes")  # fmt: skip
    second.stop()  # what it writes (a status, then its Events) is in before it exits
    settled = read(cluster, namespace, "resume")
    events_settled = len(events_for(cluster, namespace, "resume"))
    assert events_settled > events_before  # the scale-up was reported
    third = run_operator(namespaces=[namespace])
    wait_for(
        lambda: resumed in third.log_text(), timeout=60, what="the restarted operator to resume the service"
    )
    assert (
        read(cluster, namespace, "resume")["metadata"]["resourceVersion"]
        == settled["metadata"]["resourceVersion"]
    )
    assert len(events_for(cluster, namespace, "resume")) == events_settled
    assert ready["metadata"]["uid"] == settled["metadata"]["uid"]


def test_deleting_the_service_removes_every_child_and_its_metric_series(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    from tests.integration.test_operator_metrics import scrape

    def series() -> list[tuple[str, frozenset[tuple[str, str]]]]:
        return [k for k in scrape(operator) if ("namespace", namespace) in k[1] and ("name", "gone") in k[1]]

    create(cluster, namespace, small_service("gone"))
    wait_ready(cluster, namespace, "gone")
    assert series()  # the replica gauges of the service
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")

    def all_gone() -> bool:
        selector = "inferfleet.io/service=gone"
        return not (
            cluster.apps.list_namespaced_deployment(namespace, label_selector=selector).items
            or cluster.core.list_namespaced_service(namespace, label_selector=selector).items
            or client.PolicyV1Api(cluster.api_client).list_namespaced_pod_disruption_budget(
                namespace, label_selector=selector).items
            or engine_pods(cluster, namespace, "gone")
        )  # fmt: skip

    wait_for(all_gone, timeout=60, what="the Deployment, Service, PDB and pods to be collected")
    wait_for(lambda: not series(), timeout=30, what="no metric series of the deleted service")


def test_a_product_no_node_has_is_reported_without_harming_other_services(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, small_service("nowhere", product="NVIDIA-B200"))
    create(cluster, namespace, small_service("fine"))

    def reported() -> dict[str, Any] | None:
        cond = status_condition(read(cluster, namespace, "nowhere"), "Ready")
        return cond if cond.get("reason") == "NoMatchingNodes" else None

    cond = wait_for(reported, timeout=60, what="Ready=False NoMatchingNodes")
    assert cond["status"] == "False"
    assert "NVIDIA-B200" in cond["message"]
    assert "NVIDIA-H100-80GB-HBM3" in cond["message"]
    assert read(cluster, namespace, "nowhere")["status"]["phase"] == "Pending"

    def warned() -> bool:
        return any(
            e.reason == "NoMatchingNodes" and e.type == "Warning"
            for e in events_for(cluster, namespace, "nowhere")
        )

    wait_for(warned, timeout=30, what="a Warning Event")
    assert not cluster.apps.list_namespaced_deployment(
        namespace, label_selector="inferfleet.io/service=nowhere"
    ).items
    wait_ready(cluster, namespace, "fine")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
            "minReplicas must be less than or equal to maxReplicas",
        ),
        ({"sharding": {"mode": "manual"}}, "tensorParallel is required in manual mode"),
        ({"sharding": {"mode": "manual", "tensorParallel": 3}}, "tensorParallel must be a power of two"),
        ({"engine": {"kind": "custom"}}, "image is required when kind is custom"),
        ({"model": {"dtype": "fp4"}}, 'Unsupported value: "fp4"'),
    ],
)
def test_the_api_server_rejects_bad_specs_with_clear_messages(
    cluster: Cluster, namespace: str, change: dict[str, Any], message: str
) -> None:
    body = small_service("bad")
    for section, values in change.items():
        merged = copy.deepcopy(body["spec"].get(section, {}))
        merged.update(values)
        if section == "engine" and values.get("kind") == "custom":
            merged.pop("image", None)
        body["spec"][section] = merged
    with pytest.raises(ApiException) as info:
        create(cluster, namespace, body)
    assert info.value.status == 422
    assert message in json.loads(info.value.body)["message"]


def test_in_a_restricted_namespace_refused_pods_are_reported_and_a_security_context_gets_them_admitted(
    cluster: Cluster, run_operator: Callable[..., OperatorProcess]
) -> None:
    namespace = restricted_namespace(cluster.core, "restricted-engines")
    try:
        run_operator(namespaces=[namespace])
        create(cluster, namespace, small_service("locked"))

        ready = wait_ready_reason(cluster, namespace, "locked", "PodCreationFailed")
        assert 'violates PodSecurity "restricted:latest"' in ready["message"]
        # The Event is posted right after the status write that carries the condition.
        warnings = wait_for(
            lambda: [e for e in events_for(cluster, namespace, "locked") if e.reason == "PodCreationFailed"],
            timeout=30,
            what="the PodCreationFailed Event",
        )
        assert warnings[0].type == "Warning"

        patch_spec(cluster, namespace, "locked", {"engine": {"securityContext": RESTRICTED_SECURITY_CONTEXT}})
        wait_ready(cluster, namespace, "locked")
        [pod] = engine_pods(cluster, namespace, "locked")
        engine = next(c for c in pod.spec.containers if c.name == "engine")
        assert engine.security_context.run_as_user == 1000
        assert engine.security_context.capabilities.drop == ["ALL"]
    finally:
        cluster.core.delete_namespace(namespace)


def test_a_tainted_gpu_pool_serves_only_services_that_tolerate_it_with_their_priority_class(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    """GPU pools are often tainted beyond the GPU resource's own taint (AKS advises sku=gpu)."""
    l4_nodes = cluster.core.list_node(label_selector="nvidia.com/gpu.product=NVIDIA-L4").items
    sku = client.V1Taint(key="sku", value="gpu", effect="NoSchedule")
    scheduling_api = client.SchedulingV1Api(cluster.api_client)
    priority = f"inference-{namespace}"
    for node in l4_nodes:
        cluster.core.patch_node(node.metadata.name, {"spec": {"taints": [*(node.spec.taints or []), sku]}})
    try:
        # Started after the taints: its node index is filled before it handles a service (kopf
        # waits for its indexes), so it never plans on a pool it has not yet seen tainted.
        # The installation allows this PriorityClass (policy.allowedPriorityClasses in the chart).
        run_operator(namespaces=[namespace], extra_args=[f"--allowed-priority-classes={priority}"])
        create(cluster, namespace, small_service("pool"))

        wait_ready_reason(cluster, namespace, "pool", "NoMatchingNodes", timeout=60)
        assert engine_pods(cluster, namespace, "pool") == []

        scheduling_api.create_priority_class(
            client.V1PriorityClass(metadata=client.V1ObjectMeta(name=priority), value=100000)
        )
        toleration = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
        patch_spec(cluster, namespace, "pool",
                   {"scheduling": {"tolerations": [toleration], "priorityClassName": priority}})  # fmt: skip
        wait_ready(cluster, namespace, "pool")
        [pod] = engine_pods(cluster, namespace, "pool")
        assert pod.spec.node_name in {n.metadata.name for n in l4_nodes}
        assert ("sku", "Equal", "gpu", "NoSchedule") in {
            (t.key, t.operator, t.value, t.effect) for t in pod.spec.tolerations
        }
        assert (pod.spec.priority_class_name, pod.spec.priority) == (priority, 100000)
    finally:
        for node in l4_nodes:
            current = cluster.core.read_node(node.metadata.name)
            kept = [t for t in current.spec.taints or [] if t.key != "sku"]
            cluster.core.patch_node(node.metadata.name, {"spec": {"taints": kept}})
        with contextlib.suppress(ApiException):
            scheduling_api.delete_priority_class(priority)


def test_a_literal_token_in_env_deploys_with_one_warning_event_recommending_a_secret(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    body = small_service("leaky")
    body["spec"]["engine"]["env"] = [{"name": "HF_TOKEN", "value": "hf_" + "x" * 34}]
    create(cluster, namespace, body)
    wait_ready(cluster, namespace, "leaky")

    def warned() -> list[client.CoreV1Event]:
        return [e for e in events_for(cluster, namespace, "leaky") if e.reason == "LiteralSecretInSpec"]

    [event] = wait_for(warned, timeout=30, what="a LiteralSecretInSpec Event")
    assert event.type == "Warning"
    assert "HF_TOKEN" in event.message
    assert "valueFrom.secretKeyRef" in event.message
    assert "hf_xxx" not in event.message  # the Event names the variable, never its value
