"""Inputs of the golden status and child-object cases (tests/unit/test_status_golden.py).

Only calls whose shape is the planners' public contract are used here, so the recorded outputs
(tests/unit/status_golden.json, captured before status became a typed model) stay comparable.
Regenerate only for an intended change: `python -m tests.unit.status_golden_cases`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferfleet.api import InferenceServiceSpec
from inferfleet.planfile import plan_file
from inferfleet.planning.autoscale import compute_autoscaler_status, with_scaler_state
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import GpuNode, ProductCapacity
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.placement import GroupPlacement, Reservation
from inferfleet.planning.policy import TenantPolicy
from inferfleet.planning.scaling import ScalerState, ScalingDecision
from inferfleet.planning.service import Blocked, GroupInputs, ServicePlan, plan_service
from inferfleet.planning.status import (
    Observation,
    ObservedDeployment,
    aggregate_groups,
    compute_placed,
    compute_status,
    placement_status,
    pod_placement_status,
)

GOLDEN = Path(__file__).with_name("status_golden.json")
ROOT = Path(__file__).parents[2]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OWNER = Owner(name="svc", namespace="ml", uid="u")
H100 = "NVIDIA-H100-80GB-HBM3"
CLUSTER = {H100: ProductCapacity(H100, gpu_memory_gib=79.6, gpus_per_node=8, nodes=6)}
ARCH_70B = {"numLayers": 80, "hiddenSize": 8192, "numAttentionHeads": 64, "numKeyValueHeads": 8}
ARCH_405B = {"numLayers": 126, "hiddenSize": 16384, "numAttentionHeads": 128, "numKeyValueHeads": 8}


def spec(
    params: float, arch: dict[str, int] | None, engine: str = "vllm", **extra: Any
) -> InferenceServiceSpec:
    model = {"name": "m", "source": "hf://org/m", "parametersBillions": params, "architecture": arch,
             "maxModelLen": 8192}  # fmt: skip
    return InferenceServiceSpec.model_validate(
        {"model": model, "engine": {"kind": engine}, "accelerator": {"product": H100}, **extra}
    )


def nodes(*zones: str) -> list[GpuNode]:
    labels = {"nvidia.com/gpu.product": H100}
    return [
        GpuNode(f"h100-{z}-{i}", H100, 8, 79.6, {**labels, "topology.kubernetes.io/zone": f"zone-{z}"}, True)
        for z in zones
        for i in (1, 2)
    ]


def single_plan() -> ServicePlan:
    return plan_service(OWNER, spec(70.6, ARCH_70B, replicas=2), CLUSTER, scheduler_name="binpack")


def multi_plan(zones: tuple[str, ...] = ("a", "b"), engine: str = "vllm") -> ServicePlan:
    inputs = GroupInputs(nodes(*zones))
    return plan_service(OWNER, spec(405.9, ARCH_405B, engine, replicas=2), CLUSTER, inputs)


def multi_kept(inputs: GroupInputs) -> ServicePlan:
    return plan_service(OWNER, spec(405.9, ARCH_405B, replicas=2), CLUSTER, inputs)


def observe(plan: ServicePlan, **changes: Any) -> Observation:
    fields: dict[str, Any] = {
        "generation": 3, "desired_replicas": 2, "selector": "inferfleet.io/service=svc",
        "endpoint": "http://svc.ml.svc:8000/v1", "blocked": plan.blocked, "shard_plan": plan.shard_plan,
        "deployment": None, "placed": compute_placed(plan),
    }  # fmt: skip
    return Observation(**{**fields, **changes})


READY_DEPLOYMENT = ObservedDeployment(2, 2, 2, 4, 4)
POD_PLACEMENT = pod_placement_status([("svc-b", "n2"), ("svc-a", "n1")], {"n1": "zone-a", "n2": "zone-b"})
AUTOSCALED: dict[str, Any] = {
    "observedGeneration": 2,
    "phase": "Deploying",
    "conditions": [
        {"type": "Ready", "status": "False", "reason": "Deploying", "message": "creating",
         "observedGeneration": 2, "lastTransitionTime": "2025-12-31T10:00:00Z"},
        {"type": "MetricsAvailable", "status": "True", "reason": "QueueDepthReported",
         "message": "engine queue metrics are fresh", "observedGeneration": 2,
         "lastTransitionTime": "2025-12-31T10:01:00Z"},
    ],
    "replicas": 1, "readyReplicas": 0, "selector": "inferfleet.io/service=svc",
    "endpoint": "http://svc.ml.svc:8000/v1", "queueDepth": 3.5, "lastScaleTime": "2025-12-31T10:02:00Z",
    "scalingHistory": [{"time": "2025-12-31T10:02:00Z", "from": 1, "to": 2, "reason": "QueueAboveTarget",
                        "message": "queue 9"}],
    "autoscaler": {"recommendations": [{"time": 1767175320.0, "replicas": 2}], "lastActive": 1767175320.0},
}  # fmt: skip


def group(replica: int, zone: str, ready_pods: int) -> ObservedGroup:
    members = (f"h100-{zone}-1", f"h100-{zone}-2")
    uid = f"uid-{replica}"
    return ObservedGroup("ml", "svc", replica, uid, f"zone-{zone}", members, 8, 2, ready_pods, 1, 1)


def status_cases() -> dict[str, Callable[[], dict[str, Any]]]:
    single, multi = single_plan(), multi_plan()
    placing = multi_plan(zones=("a",))
    groups = [group(0, "a", 2), group(1, "b", 1)]
    degraded = observe(
        multi, deployment=aggregate_groups(groups, {1: "pod refused"}), placement=placement_status(groups)
    )
    ready = observe(single, deployment=READY_DEPLOYMENT, placement=POD_PLACEMENT)
    conflict = Blocked("NameConflict", "Service svc exists and is not controlled by this InferenceService")
    refused = plan_service(OWNER, spec(70.6, ARCH_70B, replicas=100), CLUSTER, policy=TenantPolicy())
    manual = {"mode": "manual", "tensorParallel": 4, "pipelineParallel": 40}
    invalid = plan_service(OWNER, spec(3, None, sharding=manual), CLUSTER)
    return {
        "single-ready": lambda: compute_status(ready, {}, NOW),
        "single-ready-after-autoscaler": lambda: compute_status(ready, AUTOSCALED, NOW),
        "single-name-conflict": lambda: compute_status(
            observe(single, deployment=READY_DEPLOYMENT, apply_error=conflict), AUTOSCALED, NOW
        ),
        "single-deploying": lambda: compute_status(observe(single), {}, NOW),
        "invalid-spec": lambda: compute_status(observe(invalid), {}, NOW),
        "policy-violation": lambda: compute_status(observe(refused), {}, NOW),
        "multi-placing": lambda: compute_status(
            observe(placing, deployment=aggregate_groups([]), placement=placement_status([])), {}, NOW
        ),
        "multi-degraded": lambda: compute_status(degraded, AUTOSCALED, NOW),
    }


def autoscaler_cases() -> dict[str, Callable[[], dict[str, Any]]]:
    up = ScalingDecision(replicas=3, reason="QueueAboveTarget", message="queue 9 on 1 replica", limited=False)
    hold = ScalingDecision(replicas=2, reason="MetricsUnavailable", message="holding", limited=False)
    capped = ScalingDecision(replicas=8, reason="AtMaxReplicas", message="recommend 12, max 8", limited=True)
    base = status_cases()["single-ready-after-autoscaler"]
    state = ScalerState(recommendations=((1767268800.0, 3),), last_active=1767268800.0)
    now = NOW.timestamp()

    def tick(previous: dict[str, Any], decision: ScalingDecision, current: int, **kw: Any) -> dict[str, Any]:
        return compute_autoscaler_status(
            previous, current_replicas=current, decision=decision, generation=3, now=now, **kw
        )

    return {
        "scale-up-from-nothing": lambda: tick({}, up, 1, queue_depth=9.0, metrics_problem=None),
        "scale-up-after-reconcile": lambda: with_scaler_state(
            tick(base(), up, 2, queue_depth=9.25, metrics_problem=None), state
        ),
        "metrics-missing": lambda: tick(base(), hold, 2, queue_depth=None, metrics_problem="no answer"),
        "custom-query-disabled": lambda: tick(
            AUTOSCALED, hold, 2, queue_depth=None, metrics_problem="off", metrics_reason="CustomQueryDisabled"
        ),
        "capped": lambda: tick(AUTOSCALED, capped, 7, queue_depth=30.0, metrics_problem=None),
    }


def children_cases() -> dict[str, Callable[[], Any]]:
    existing = {0: GroupPlacement("zone-b", ("h100-b-1", "h100-b-2"))}
    kept = GroupInputs(nodes("a", "b"), reservations=[Reservation("ml/svc/0", existing[0].nodes, 8)],
                       existing=existing)  # fmt: skip
    return {
        "single-node": lambda: single_plan().children,
        "multi-node-vllm": lambda: multi_plan().children,
        "multi-node-sglang": lambda: multi_plan(engine="sglang").children,
        "multi-node-kept": lambda: multi_kept(kept).children,
        "plan-file": lambda: [p.to_json() for p in plan_file(ROOT / "examples" / "llama-3.1-405b-vllm.yaml")],
    }


def all_cases() -> dict[str, Callable[[], Any]]:
    return {
        **{f"status/{k}": v for k, v in status_cases().items()},
        **{f"autoscaler/{k}": v for k, v in autoscaler_cases().items()},
        **{f"children/{k}": v for k, v in children_cases().items()},
    }


def render(value: Any) -> str:
    """The JSON bytes a client would send (key order as produced)."""
    return json.dumps(value, ensure_ascii=False)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({k: render(f()) for k, f in all_cases().items()}, indent=1) + "\n")
