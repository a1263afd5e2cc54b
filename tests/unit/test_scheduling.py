"""spec.scheduling: node pools, tolerated taints and priority, in sizing, placement and pod specs."""

from typing import Any

import pytest
from pydantic import ValidationError

from inferfleet.api import InferenceServiceSpec, SchedulingSpec, Toleration
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import GpuNode, Taint, build_gpu_node, summarize_products, tolerates
from inferfleet.planning.placement import compute_free_gpus
from inferfleet.planning.policy import TenantPolicy
from inferfleet.planning.service import GroupInputs, plan_service

OWNER = Owner(name="svc", namespace="ml", uid="u")
L4 = "NVIDIA-L4"
H100 = "NVIDIA-H100-80GB-HBM3"
SKU_GPU = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
READY = [{"type": "Ready", "status": "True"}]


def node(
    name: str, product: str, gpus: int, taints: tuple[dict[str, str], ...] = (), **labels: str
) -> GpuNode:
    labels |= {"nvidia.com/gpu.product": product, "topology.kubernetes.io/zone": "zone-a",
               "nvidia.com/gpu.memory": {L4: "23034", H100: "81559"}[product]}  # fmt: skip
    built = build_gpu_node(
        {"metadata": {"name": name, "labels": labels}, "spec": {"taints": list(taints)},
         "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}, "conditions": READY}}
    )  # fmt: skip
    assert built is not None
    return built


def spec_with(scheduling: dict[str, Any], product: str = L4, billions: float = 8.0) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {"model": {"name": "m", "source": "hf://org/m", "parametersBillions": billions},
         "engine": {"kind": "vllm"}, "accelerator": {"product": product}, "scheduling": scheduling}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "sku", "value": "gpu", "effect": "NoSchedule"}, Taint("sku", "gpu", "NoSchedule"), True),
        ({"key": "sku", "value": "cpu", "effect": "NoSchedule"}, Taint("sku", "gpu", "NoSchedule"), False),
        ({"key": "sku", "value": "gpu", "effect": "NoExecute"}, Taint("sku", "gpu", "NoSchedule"), False),
        ({"key": "sku", "value": "gpu"}, Taint("sku", "gpu", "NoExecute"), True),  # no effect: every effect
        ({"key": "sku", "operator": "Exists"}, Taint("sku", "anything", "NoSchedule"), True),
        ({"key": "other", "operator": "Exists"}, Taint("sku", "gpu", "NoSchedule"), False),
        ({"operator": "Exists"}, Taint("sku", "gpu", "NoSchedule"), True),  # no key: every taint
        ({"key": "dedicated"}, Taint("dedicated", "", "NoSchedule"), True),  # Equal to an empty value
    ],
)
def test_a_toleration_matches_taints_as_kubernetes_does(
    toleration: dict[str, Any], taint: Taint, tolerated: bool
) -> None:
    assert tolerates(Toleration.model_validate(toleration), taint) is tolerated


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        ({"key": "sku", "operator": "Exists", "value": "gpu"}, "value must be unset when operator is Exists"),
        ({"value": "gpu"}, "operator must be Exists when key is unset"),
        ({"key": "sku", "tolerationSeconds": 30}, "tolerationSeconds is set only with effect NoExecute"),
    ],
)
def test_tolerations_kubernetes_would_refuse_are_refused(toleration: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Toleration.model_validate(toleration)


def test_the_gpu_product_is_not_chosen_through_the_node_selector() -> None:
    with pytest.raises(ValidationError, match=r"spec\.accelerator\.product"):
        SchedulingSpec.model_validate({"nodeSelector": {"nvidia.com/gpu.product": L4}})


def test_tainted_gpu_nodes_count_only_for_services_that_tolerate_the_taint() -> None:
    nodes = [node("l4-1", L4, 4, (SKU_GPU,)), node("l4-2", L4, 4, (SKU_GPU,))]

    blocked = plan_service(OWNER, spec_with({}), summarize_products(nodes))
    assert blocked.blocked is not None
    assert blocked.blocked.reason == "NoMatchingNodes"

    tolerant = spec_with({"tolerations": [{"key": "sku", "operator": "Exists", "effect": "NoSchedule"}]})
    plan = plan_service(OWNER, tolerant, summarize_products(nodes, tolerant.scheduling))
    assert plan.blocked is None
    pod = plan.children[0]["spec"]["template"]["spec"]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Exists", "effect": "NoSchedule"},
    ]


ALLOWED = frozenset({"inference-high"})


def test_a_node_pool_selector_narrows_sizing_and_goes_into_the_pod_spec_with_a_priority_class() -> None:
    nodes = [node("l4-a", L4, 4, pool="inference"), node("l4-b", L4, 2, pool="batch")]
    chosen = spec_with({"nodeSelector": {"pool": "batch"}, "priorityClassName": "inference-high"})
    products = summarize_products(nodes, chosen.scheduling)
    assert products[L4].gpus_per_node == 2  # the batch pool's nodes only
    assert summarize_products(nodes)[L4].gpus_per_node == 4

    plan = plan_service(OWNER, chosen, products, policy=TenantPolicy(allowed_priority_classes=ALLOWED))
    pod = plan.children[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "batch", "nvidia.com/gpu.product": L4}
    assert pod["priorityClassName"] == "inference-high"

    absent = spec_with({"nodeSelector": {"pool": "none"}})
    blocked = plan_service(OWNER, absent, summarize_products(nodes, absent.scheduling)).blocked
    assert blocked is not None
    assert blocked.reason == "NoMatchingNodes"


def test_replica_groups_are_placed_only_on_nodes_the_service_accepts() -> None:
    tainted = [node(f"h-{i}", H100, 8, (SKU_GPU,), pool="llm") for i in (1, 2)]
    plain = [node(f"p-{i}", H100, 8, pool="other") for i in (1, 2)]
    nodes = tainted + plain
    free = compute_free_gpus(nodes, H100, "topology.kubernetes.io/zone", [], [])
    assert [f.name for f in free] == ["p-1", "p-2"]

    tolerant = spec_with(
        {"tolerations": [SKU_GPU], "nodeSelector": {"pool": "llm"}}, product=H100, billions=405.9
    )
    free = compute_free_gpus(nodes, H100, "topology.kubernetes.io/zone", [], [], tolerant.scheduling)
    assert [f.name for f in free] == ["h-1", "h-2"]

    products = summarize_products(nodes, tolerant.scheduling)
    plan = plan_service(OWNER, tolerant, products, GroupInputs(gpu_nodes=nodes))
    assert plan.blocked is None
    assert plan.shortfalls == {}
    assert sorted(plan.placements[0].nodes) == ["h-1", "h-2"]
    statefulset = plan.children[0]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in (
        statefulset["spec"]["template"]["spec"]["tolerations"]
    )


def test_a_cordoned_or_not_ready_node_is_refused_whatever_the_service_tolerates() -> None:
    everything = SchedulingSpec.model_validate({"tolerations": [{"operator": "Exists"}]})
    cordoned = GpuNode("c", L4, 4, 22.5, {}, cordoned=True)
    not_ready = GpuNode("n", L4, 4, 22.5, {}, ready=False)
    assert not cordoned.accepts(everything)
    assert not not_ready.accepts(everything)
    assert GpuNode("t", L4, 4, 22.5, {}, taints=(Taint("x", "", "NoExecute"),)).accepts(everything)
