from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import GpuNode, ProductCapacity, build_gpu_node, summarize_products
from inferfleet.planning.service import plan_service

OWNER = Owner(name="svc", namespace="ml", uid="u")
H100 = ProductCapacity("NVIDIA-H100-80GB-HBM3", gpu_memory_gib=79.6, gpus_per_node=8, nodes=4)
L4 = ProductCapacity("NVIDIA-L4", gpu_memory_gib=22.5, gpus_per_node=4, nodes=2)
CLUSTER = {p.product: p for p in (H100, L4)}

LLAMA_70B: dict[str, Any] = {
    "name": "llama-70b",
    "source": "hf://meta-llama/Llama-3.1-70B-Instruct",
    "parametersBillions": 70.6,
    "architecture": {"numLayers": 80, "hiddenSize": 8192, "numAttentionHeads": 64, "numKeyValueHeads": 8},
    "maxModelLen": 8192,
}


def spec(model: dict[str, Any] = LLAMA_70B, **accelerator: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {"model": model, "engine": {"kind": "vllm"}, "accelerator": accelerator}
    )


def test_a_70b_model_on_h100_gets_one_4_gpu_pod_with_tp4_and_its_service_and_pdb() -> None:
    plan = plan_service(OWNER, spec(product="NVIDIA-H100-80GB-HBM3"), CLUSTER)
    assert plan.blocked is None
    assert plan.shard_plan is not None
    assert (plan.shard_plan.tensor_parallel, plan.shard_plan.pipeline_parallel) == (4, 1)
    assert [c["kind"] for c in plan.children] == ["Deployment", "Service", "PodDisruptionBudget"]
    engine = plan.children[0]["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert engine["args"][engine["args"].index("--tensor-parallel-size") + 1] == "4"


def test_a_product_the_cluster_lacks_blocks_with_the_products_it_has() -> None:
    plan = plan_service(OWNER, spec(product="NVIDIA-B200"), CLUSTER)
    assert plan.children == []
    assert plan.blocked is not None
    assert plan.blocked.reason == "NoMatchingNodes"
    assert "NVIDIA-B200" in plan.blocked.message
    assert "products in the cluster: NVIDIA-H100-80GB-HBM3, NVIDIA-L4" in plan.blocked.message


def test_a_replica_that_needs_several_nodes_is_not_half_deployed() -> None:
    arch = {"numLayers": 126, "hiddenSize": 16384, "numAttentionHeads": 128, "numKeyValueHeads": 8}
    big = {**LLAMA_70B, "parametersBillions": 405.9, "architecture": arch}
    plan = plan_service(OWNER, spec(big, product="NVIDIA-H100-80GB-HBM3"), CLUSTER)
    assert plan.children == []
    assert plan.blocked is not None
    assert plan.blocked.reason == "MultiNodeNotSupported"
    assert plan.shard_plan is not None
    assert plan.shard_plan.layout == "8x2"


def test_a_gpu_too_small_for_any_shard_is_refused_with_numbers() -> None:
    tiny = {"T4-4GB": ProductCapacity("T4-4GB", gpu_memory_gib=4, gpus_per_node=8, nodes=1)}
    plan = plan_service(OWNER, spec(product="T4-4GB"), tiny)
    assert plan.children == []
    assert plan.blocked is not None
    assert plan.blocked.reason == "ModelDoesNotFit"
    assert "GiB" in plan.blocked.message


def test_node_labels_win_over_the_specs_planning_hints() -> None:
    # The spec claims 80 GiB GPUs, the L4 nodes report 22.5 GiB: plan for what is really there.
    model = {**LLAMA_70B, "dtype": "int4"}
    plan = plan_service(OWNER, spec(model, product="NVIDIA-L4", memoryGiB=80, gpusPerNode=8), CLUSTER)
    assert plan.shard_plan is not None
    assert plan.shard_plan.total_gpus == 4


def test_unknown_gpu_memory_asks_for_the_spec_field_or_the_node_label() -> None:
    unlabelled = {"NVIDIA-L4": ProductCapacity("NVIDIA-L4", gpu_memory_gib=None, gpus_per_node=4, nodes=1)}
    plan = plan_service(OWNER, spec(product="NVIDIA-L4"), unlabelled)
    assert plan.blocked is not None
    assert plan.blocked.reason == "UnknownGpuMemory"
    assert "spec.accelerator.memoryGiB" in plan.blocked.message


L4_LABELS = {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "23034"}
READY = [{"type": "Ready", "status": "True"}]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (
            {"metadata": {"name": "n1", "labels": L4_LABELS},
             "status": {"allocatable": {"nvidia.com/gpu": "4"}, "conditions": READY}},
            GpuNode("n1", "NVIDIA-L4", 4, 23034 / 1024, L4_LABELS, True),
        ),
        ({"metadata": {"name": "cpu"}, "status": {"allocatable": {"cpu": "32"}}}, None),
    ],
)  # fmt: skip
def test_nodes_become_gpu_inventory(node: dict, expected: GpuNode | None) -> None:
    assert build_gpu_node(node) == expected


def test_cordoned_or_not_ready_nodes_offer_no_capacity() -> None:
    eight = {"nvidia.com/gpu": "8"}
    not_ready = [{"type": "Ready", "status": "False"}]
    nodes = [
        {"metadata": {"name": "a", "labels": {"nvidia.com/gpu.product": "X"}},
         "spec": {"unschedulable": True}, "status": {"allocatable": eight, "conditions": READY}},
        {"metadata": {"name": "b", "labels": {"nvidia.com/gpu.product": "Y"}},
         "status": {"allocatable": eight, "conditions": not_ready}},
    ]  # fmt: skip
    gpu_nodes = [n for n in (build_gpu_node(node) for node in nodes) if n is not None]
    assert summarize_products(gpu_nodes) == {}
