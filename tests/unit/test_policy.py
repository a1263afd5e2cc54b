"""The installation's tenant policy: what a spec may ask for beyond the CRD's bounds."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.placement import NodeFree, Shortfall, plan_groups
from inferfleet.planning.policy import TenantPolicy, compute_policy_violations
from inferfleet.planning.service import GroupInputs, plan_service
from tests.unit.test_service_plan import CLUSTER, LLAMA_70B

OWNER = Owner(name="svc", namespace="ml", uid="u")
H100 = "NVIDIA-H100-80GB-HBM3"


def spec(**changes: Any) -> InferenceServiceSpec:
    body: dict[str, Any] = {"model": LLAMA_70B, "engine": {"kind": "vllm"}, "accelerator": {"product": H100}}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = body
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return InferenceServiceSpec.model_validate(body)


DEFAULT = TenantPolicy()
GENEROUS = TenantPolicy(
    max_replicas_per_service=500,
    allowed_capabilities=frozenset({"IPC_LOCK", "SYS_NICE"}),
    allowed_priority_classes=frozenset({"inference-high"}),
    gpu_resource_names=frozenset({"nvidia.com/gpu", "example.com/tpu"}),
)

REFUSED = [
    (spec(replicas=65), DEFAULT, "spec.replicas: 65 is above this installation's limit of 64 per service"),
    (spec(replicas=501), GENEROUS, "spec.replicas: 501 is above this installation's limit of 500"),
    (spec(scaling={"maxReplicas": 100}), DEFAULT, "spec.scaling.maxReplicas: 100 is above"),
    (
        spec(accelerator__resourceName="example.com/fpga"),
        DEFAULT,
        "spec.accelerator.resourceName: example.com/fpga is not a GPU resource of this cluster "
        "(amd.com/gpu, nvidia.com/gpu)",
    ),
    (
        spec(engine__securityContext={"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}),
        DEFAULT,
        "spec.engine.securityContext.capabilities.add: NET_ADMIN, SYS_ADMIN not allowed (allowed: none",
    ),
    (
        spec(engine__securityContext={"capabilities": {"add": ["IPC_LOCK", "SYS_ADMIN"]}}),
        GENEROUS,
        "capabilities.add: SYS_ADMIN not allowed (allowed: IPC_LOCK, SYS_NICE",
    ),
    (spec(engine__securityContext={"runAsUser": 0}), GENEROUS, "securityContext.runAsUser: 0 (root)"),
    (
        spec(engine__securityContext={"seccompProfile": {"type": "Unconfined"}}),
        GENEROUS,
        "spec.engine.securityContext.seccompProfile: Unconfined is not allowed",
    ),
    (
        spec(scheduling={"tolerations": [{"operator": "Exists"}]}),
        GENEROUS,
        "spec.scheduling.tolerations[0]: a toleration of every taint is not allowed",
    ),
    (
        spec(
            scheduling={
                "tolerations": [
                    {"key": "sku", "operator": "Exists"},
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
                ]
            }
        ),
        GENEROUS,
        "spec.scheduling.tolerations[1]: engine pods may not tolerate the control-plane taint",
    ),
    (
        spec(scheduling={"priorityClassName": "system-cluster-critical"}),
        DEFAULT,
        "spec.scheduling.priorityClassName: system-cluster-critical is not allowed (allowed: none;",
    ),
    (
        spec(scheduling={"priorityClassName": "system-node-critical"}),
        GENEROUS,
        "is not allowed (allowed: inference-high;",
    ),
]


@pytest.mark.parametrize(("body", "policy", "message"), REFUSED)
def test_a_spec_beyond_the_policy_is_refused_naming_the_field(
    body: InferenceServiceSpec, policy: TenantPolicy, message: str
) -> None:
    violations = compute_policy_violations(body, policy)
    assert len(violations) == 1
    assert message in violations[0]


ALLOWED = [
    (spec(replicas=64), DEFAULT),
    (spec(replicas=500, scaling={"maxReplicas": 500}), GENEROUS),
    (spec(engine__securityContext={"capabilities": {"add": ["IPC_LOCK"], "drop": ["ALL"]}}), GENEROUS),
    (
        spec(engine__securityContext={"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}),
        DEFAULT,
    ),
    (spec(scheduling={"tolerations": [{"key": "sku", "operator": "Exists"}]}), DEFAULT),
    (spec(scheduling={"priorityClassName": "inference-high"}), GENEROUS),
    (spec(accelerator__resourceName="example.com/tpu"), GENEROUS),
]


@pytest.mark.parametrize(("body", "policy"), ALLOWED)
def test_a_spec_within_the_policy_passes(body: InferenceServiceSpec, policy: TenantPolicy) -> None:
    assert compute_policy_violations(body, policy) == []


def test_a_policy_violation_blocks_the_plan_with_every_offending_field_and_builds_nothing() -> None:
    bad = spec(replicas=100, engine__securityContext={"runAsUser": 0})
    plan = plan_service(OWNER, bad, CLUSTER)
    assert plan.blocked is not None
    assert plan.blocked.reason == "PolicyViolation"
    assert "spec.replicas: 100" in plan.blocked.message
    assert "runAsUser: 0 (root)" in plan.blocked.message
    assert plan.children == []
    assert plan.shard_plan is None


def test_engine_pods_mount_no_service_account_token() -> None:
    plan = plan_service(OWNER, spec(), CLUSTER)
    assert plan.children[0]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_group_placement_stops_at_the_first_replica_that_does_not_fit() -> None:
    free = [NodeFree(name=f"n{i}", domain="rack-a", free_gpus=8) for i in range(4)]
    plans = plan_groups(free, range(1000), 2, 8, product=H100, topology_key="rack")
    placed = [r for r, p in plans.items() if not isinstance(p, Shortfall)]
    assert placed == [0, 1]
    shortfalls = {id(p) for p in plans.values() if isinstance(p, Shortfall)}
    assert len(shortfalls) == 1, "replicas after the first that does not fit share its shortfall"
    assert len(plans) == 1000


def test_a_group_service_at_the_replica_ceiling_plans_in_bounded_time() -> None:
    nodes = [
        GpuNode(name=f"h{i}", product=H100, gpus=8, gpu_memory_gib=80, labels={"rack": f"r{i // 4}"})
        for i in range(16)
    ]
    big = {"name": "llama-405b", "source": "hf://m/405b", "parametersBillions": 405}
    body = spec(model=big, replicas=500, sharding={"topologyKey": "rack"})
    plan = plan_service(OWNER, body, CLUSTER, GroupInputs(gpu_nodes=nodes), policy=GENEROUS)
    assert plan.blocked is None
    assert len(plan.placements) == 8  # 16 nodes, two per group
    assert len(plan.shortfalls) == 492
