from typing import Any

import pytest

from inferfleet.api import Dtype, InferenceServiceSpec
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import GpuNode, ProductCapacity, build_gpu_node, summarize_products
from inferfleet.planning.model_files import ModelFacts
from inferfleet.planning.placement import GroupPlacement, Reservation
from inferfleet.planning.service import GroupInputs, ServicePlan, plan_service
from inferfleet.planning.sizing import Architecture

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


ARCH_405B = {"numLayers": 126, "hiddenSize": 16384, "numAttentionHeads": 128, "numKeyValueHeads": 8}
LLAMA_405B = {**LLAMA_70B, "parametersBillions": 405.9, "architecture": ARCH_405B}
H100_LABELS = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def h100_nodes(per_zone: dict[str, int]) -> list[GpuNode]:
    return [
        GpuNode(f"h100-{zone}-{i}", "NVIDIA-H100-80GB-HBM3", 8, 79.6,
                {**H100_LABELS, "topology.kubernetes.io/zone": f"zone-{zone}"}, True)
        for zone, count in per_zone.items()
        for i in range(1, count + 1)
    ]  # fmt: skip


def spec_405b(replicas: int, engine: str = "vllm") -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {"model": LLAMA_405B, "engine": {"kind": engine}, "accelerator": {"product": "NVIDIA-H100-80GB-HBM3"},
         "replicas": replicas}
    )  # fmt: skip


def kinds(plan: ServicePlan) -> list[str]:
    return [f"{c['kind']}/{c['metadata']['name']}" for c in plan.children]


def test_each_405b_replica_becomes_a_whole_group_inside_one_zone() -> None:
    nodes = h100_nodes({"a": 2, "b": 2})
    plan = plan_service(OWNER, spec_405b(2), CLUSTER, GroupInputs(gpu_nodes=nodes))
    assert plan.blocked is None
    assert plan.shard_plan is not None
    assert plan.shard_plan.layout == "8x2"
    assert {r: p.domain for r, p in plan.placements.items()} == {0: "zone-a", 1: "zone-b"}
    assert plan.placements[0].nodes == ("h100-a-1", "h100-a-2")
    assert kinds(plan) == [
        "StatefulSet/svc-g0", "Service/svc-g0", "StatefulSet/svc-g1", "Service/svc-g1",
        "Service/svc", "PodDisruptionBudget/svc",
    ]  # fmt: skip


def test_a_group_that_cannot_fit_whole_holds_no_gpus() -> None:
    # Two free nodes, but in different zones: per-pod scheduling would start half a group.
    plan = plan_service(OWNER, spec_405b(1), CLUSTER, GroupInputs(gpu_nodes=h100_nodes({"a": 1, "b": 1})))
    assert not [c for c in plan.children if c["kind"] == "StatefulSet"]
    assert "needs 2 nodes with 8 free NVIDIA-H100-80GB-HBM3 GPUs" in plan.shortfalls[0].message


def test_existing_groups_keep_their_nodes_and_surplus_groups_are_removed_on_scale_down() -> None:
    existing = {
        0: GroupPlacement("zone-b", ("h100-b-1", "h100-b-2")),
        1: GroupPlacement("zone-a", ("h100-a-1", "h100-a-2")),
    }
    reservations = [Reservation(f"ml/svc/{r}", p.nodes, 8) for r, p in existing.items()]
    inputs = GroupInputs(gpu_nodes=h100_nodes({"a": 2, "b": 2}), reservations=reservations, existing=existing)
    plan = plan_service(OWNER, spec_405b(1), CLUSTER, inputs)
    assert plan.placements == {0: existing[0]}
    assert plan.surplus_groups == (1,)
    assert plan.shortfalls == {}


def test_new_groups_avoid_nodes_the_scheduler_refused_and_existing_ones_keep_theirs() -> None:
    nodes = h100_nodes({"a": 2, "b": 2, "c": 2})
    refused = frozenset({"h100-a-1"})  # another pod took its GPUs after a plan put a member there
    plan = plan_service(OWNER, spec_405b(1), CLUSTER, GroupInputs(gpu_nodes=nodes, refused=refused))
    assert plan.placements[0].domain == "zone-b"
    nothing_else = plan_service(
        OWNER, spec_405b(1), CLUSTER, GroupInputs(gpu_nodes=h100_nodes({"a": 2}), refused=refused)
    )
    assert nothing_else.placements == {}
    assert nothing_else.shortfalls[0].message.startswith("needs 2 nodes")


def test_tgi_cannot_serve_a_multi_node_replica() -> None:
    plan = plan_service(
        OWNER, spec_405b(1, engine="tgi"), CLUSTER, GroupInputs(gpu_nodes=h100_nodes({"a": 2}))
    )
    assert plan.blocked is not None
    assert plan.blocked.reason == "EngineNotMultiNode"
    assert plan.children == []


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
    cordoned, not_ready_node = gpu_nodes
    assert (cordoned.ready, not_ready_node.ready) == (True, False)  # only a NotReady node is lost


@pytest.mark.parametrize(
    ("taints", "schedulable"),
    [
        ([], True),
        ([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}], True),
        ([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}], False),
        ([{"key": "maintenance", "value": "true", "effect": "NoExecute"}], False),
        ([{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}], True),
    ],
)
def test_a_node_with_a_taint_engine_pods_do_not_tolerate_offers_no_capacity(
    taints: list[dict[str, str]], schedulable: bool
) -> None:
    node = build_gpu_node(
        {"metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": "X"}}, "spec": {"taints": taints},
         "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": READY}}
    )  # fmt: skip
    assert node is not None
    assert node.ready
    assert node.schedulable is schedulable
    assert bool(summarize_products([node])) is schedulable


# The model's facts: from the spec, the table of known models, or the model's files.
LLAMA_70B_BARE = {
    "name": "llama-70b",
    "source": "hf://meta-llama/Llama-3.1-70B-Instruct",
    "maxModelLen": 8192,
}


def test_a_known_model_without_a_parameter_count_is_sized_from_the_table_as_if_the_spec_said_it() -> None:
    bare = plan_service(OWNER, spec(LLAMA_70B_BARE, product="NVIDIA-H100-80GB-HBM3"), CLUSTER)
    written = plan_service(OWNER, spec(product="NVIDIA-H100-80GB-HBM3"), CLUSTER)
    assert bare.blocked is None
    assert bare.shard_plan is not None
    assert written.shard_plan is not None
    assert bare.shard_plan.layout == written.shard_plan.layout == "4x1"
    assert bare.shard_plan.weights_gib == 131.4  # 70,553,706,496 x 2 bytes (the spec's 70.6: 131.5)
    assert bare.shard_plan.kv_cache_gib == written.shard_plan.kv_cache_gib  # the table's architecture
    assert bare.model is not None
    assert bare.model.dump() == {
        "source": "KnownModels",
        "knownModel": "meta-llama/Llama-3.1-70B-Instruct",
        "modelType": "llama",
        "parameters": 70_553_706_496,
        "dtype": "bfloat16",
        "architecture": {"numLayers": 80, "hiddenSize": 8192, "numAttentionHeads": 64, "numKeyValueHeads": 8},
    }
    assert bare.model_mismatches == written.model_mismatches == ()


def test_an_unknown_model_without_a_parameter_count_waits_for_its_metadata_and_creates_nothing() -> None:
    model = {"name": "mine", "source": "hf://acme/secret-model-13b", "maxModelLen": 8192}
    # Even with no matching GPUs: the missing count is what to fix first.
    plan = plan_service(OWNER, spec(model, product="NVIDIA-B200"), CLUSTER)
    assert plan.children == []
    assert plan.shard_plan is None
    assert plan.blocked is not None
    assert plan.blocked.reason == "ModelMetadataPending"
    assert "hf://acme/secret-model-13b is not one of inferfleet's known models" in plan.blocked.message
    assert "set spec.model.parametersBillions" in plan.blocked.message
    assert plan.model is not None
    assert plan.model.dump() == {"source": "Spec", "dtype": "bfloat16"}


def test_a_spec_that_contradicts_the_known_model_is_planned_as_written_and_reported() -> None:
    wrong = {**LLAMA_70B, "parametersBillions": 8.0}
    plan = plan_service(OWNER, spec(wrong, product="NVIDIA-H100-80GB-HBM3"), CLUSTER)
    assert plan.shard_plan is not None
    assert plan.shard_plan.weights_gib == 14.9
    assert plan.model_mismatches == (
        "spec.model.parametersBillions is 8 but inferfleet's known models "
        "(meta-llama/Llama-3.1-70B-Instruct) say 70.55 (70,553,706,496 parameters)",
    )


def test_the_model_files_facts_win_over_the_table() -> None:
    files = ModelFacts(
        parameters=3_000_000_000, dtype=Dtype.BFLOAT16, architecture=Architecture(28, 3072, 24, 8)
    )
    plan = plan_service(OWNER, spec(LLAMA_70B_BARE, product="NVIDIA-L4"), CLUSTER, model_files=files)
    assert plan.blocked is None
    assert plan.shard_plan is not None
    assert plan.shard_plan.weights_gib == 5.6
    assert plan.model is not None
    assert plan.model.source == "Files"
    assert plan.model.parameters == 3_000_000_000


def test_a_new_group_prefers_equal_nodes_whose_cache_holds_the_weights() -> None:
    nodes = h100_nodes({"a": 2, "b": 2})
    cold = plan_service(OWNER, spec_405b(1), CLUSTER, GroupInputs(gpu_nodes=nodes))
    assert cold.placements[0].domain == "zone-a"  # with nothing warm, the first of equal domains
    warm = frozenset({"h100-b-1", "h100-b-2"})
    plan = plan_service(OWNER, spec_405b(1), CLUSTER, GroupInputs(gpu_nodes=nodes, warm=warm))
    assert plan.placements[0].nodes == ("h100-b-1", "h100-b-2")
