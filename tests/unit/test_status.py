from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import ProductCapacity
from inferfleet.planning.service import Blocked, ServicePlan, plan_service
from inferfleet.planning.status import (
    Observation,
    ObservedDeployment,
    compute_events,
    compute_model_consistent,
    compute_status,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def observe(
    blocked: Blocked | None = None, deployment: ObservedDeployment | None = None, desired: int = 2
) -> Observation:
    return Observation(
        generation=3,
        desired_replicas=desired,
        selector="inferfleet.io/service=llama",
        endpoint="http://llama.ml.svc:8000/v1",
        blocked=blocked,
        shard_plan=None,
        deployment=deployment,
    )


def dep(
    replicas: int = 2, ready: int = 2, updated: int = 2, generation: int = 4, seen: int = 4
) -> ObservedDeployment:
    return ObservedDeployment(replicas, ready, updated, generation, seen)


@pytest.mark.parametrize(
    ("observation", "phase", "ready", "reason", "message"),
    [
        (observe(Blocked("NoMatchingNodes", "no node")), "Pending", "False", "NoMatchingNodes", "no node"),
        (observe(Blocked("InvalidSpec", "bad")), "Failed", "False", "InvalidSpec", "bad"),
        (observe(), "Deploying", "False", "Deploying", "creating the engine Deployment"),
        (observe(deployment=dep(ready=0)), "Deploying", "False", "ReplicasNotReady", "0/2 replicas ready"),
        (observe(deployment=dep(ready=1)), "Degraded", "False", "ReplicasNotReady", "1/2 replicas ready"),
        (observe(deployment=dep()), "Ready", "True", "AllReplicasReady", "2/2 replicas ready"),
        (
            observe(deployment=dep(seen=3)),
            "Degraded",
            "False",
            "RollingOut",
            "2/2 replicas ready; rolling out a new engine spec",
        ),
        (
            observe(deployment=dep(updated=1)),
            "Degraded",
            "False",
            "RollingOut",
            "2/2 replicas ready; rolling out a new engine spec",
        ),
        (
            observe(deployment=dep(replicas=3, ready=3, updated=2)),
            "Degraded",
            "False",
            "RollingOut",
            "3/2 replicas ready; rolling out a new engine spec",
        ),
        (
            observe(deployment=dep(0, 0, 0, generation=1, seen=0)),
            "Deploying",
            "False",
            "Deploying",
            "0/2 replicas ready; starting engine pods",
        ),
        (observe(deployment=dep(0, 0, 0), desired=0), "Ready", "True", "ScaledToZero", "0 replicas desired"),
    ],
)
def test_phase_and_ready_condition(
    observation: Observation, phase: str, ready: str, reason: str, message: str
) -> None:
    status = compute_status(observation, {}, NOW)
    assert status["phase"] == phase
    [cond] = status["conditions"]
    assert (cond["status"], cond["reason"], cond["message"]) == (ready, reason, message)
    assert cond["observedGeneration"] == 3
    assert status["observedGeneration"] == 3
    assert status["selector"] == "inferfleet.io/service=llama"


def test_recomputing_from_the_written_status_is_a_no_op_so_steady_state_writes_nothing() -> None:
    first = compute_status(observe(deployment=dep()), {}, NOW)
    again = compute_status(observe(deployment=dep()), first, NOW + timedelta(minutes=10))
    assert again == first


def test_events_only_on_ready_transitions() -> None:
    deploying = compute_status(observe(), {}, NOW)
    assert compute_events({}, deploying) == [("Normal", "Deploying", "creating the engine Deployment")]
    partial = compute_status(observe(deployment=dep(ready=0)), deploying, NOW)
    assert compute_events(deploying, partial) == [("Warning", "ReplicasNotReady", "0/2 replicas ready")]
    more = compute_status(observe(deployment=dep(ready=1)), partial, NOW)
    assert compute_events(partial, more) == []  # same status and reason: no event spam
    ready = compute_status(observe(deployment=dep()), more, NOW)
    assert compute_events(more, ready) == [("Normal", "AllReplicasReady", "2/2 replicas ready")]


def test_a_failed_child_apply_keeps_ready_false_even_when_every_replica_is_ready() -> None:
    ready = compute_status(observe(deployment=dep()), {}, NOW)
    error = "applying Service llama: 500 Internal Server Error"
    failing = compute_status(
        replace(observe(deployment=dep()), apply_error=Blocked("ApplyFailed", error)), ready, NOW
    )
    assert failing["phase"] == "Degraded"
    [cond] = failing["conditions"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "ApplyFailed", error)
    assert compute_events(ready, failing) == [("Warning", "ApplyFailed", error)]
    assert compute_status(observe(deployment=dep()), failing, NOW)["phase"] == "Ready"


def test_a_multi_node_service_waiting_for_capacity_is_placing_and_says_why() -> None:
    from inferfleet.planning.conditions import ConditionUpdate

    placed = ConditionUpdate("Placed", False, "InsufficientCapacity", "replica 0: needs 2 nodes")
    obs = Observation(
        generation=1, desired_replicas=1, selector="s", endpoint="e", blocked=None, shard_plan=None,
        deployment=dep(0, 0, 0, generation=1, seen=1), placed=placed,
    )  # fmt: skip
    status = compute_status(obs, {}, NOW)
    assert status["phase"] == "Placing"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InsufficientCapacity")
    assert status["placement"] == []
    events = compute_events({}, status)
    assert ("Warning", "InsufficientCapacity", "replica 0: needs 2 nodes") in events


def test_groups_count_as_replicas_only_when_every_member_is_ready() -> None:
    from inferfleet.planning.observed import ObservedGroup
    from inferfleet.planning.status import aggregate_groups, placement_status

    def group(replica: int, ready_pods: int) -> ObservedGroup:
        return ObservedGroup("ml", "big", replica, "uid", f"rack-{replica}", (f"n{replica}a", f"n{replica}b"),
                             8, 2, ready_pods, 1, 1)  # fmt: skip

    groups = [group(1, 1), group(0, 2)]
    assert aggregate_groups(groups) == ObservedDeployment(2, 1, 2, 1, 1)
    assert tuple(p.dump() for p in placement_status(groups)) == (
        {"replica": 0, "domain": "rack-0", "nodes": ["n0a", "n0b"]},
        {"replica": 1, "domain": "rack-1", "nodes": ["n1a", "n1b"]},
    )


def test_single_pod_replicas_are_listed_by_pod_name_with_their_nodes_domain() -> None:
    from inferfleet.planning.status import pod_placement_status

    pods = [("svc-b", "n2"), ("svc-a", "n1")]
    assert tuple(p.dump() for p in pod_placement_status(pods, {"n1": "zone-a", "n2": "zone-b"})) == (
        {"replica": 0, "domain": "zone-a", "nodes": ["n1"]},
        {"replica": 1, "domain": "zone-b", "nodes": ["n2"]},
    )


FORBIDDEN = (
    'pods "llama-6d4f-x2" is forbidden: violates PodSecurity "restricted:latest": '
    'allowPrivilegeEscalation != false (container "engine" must set '
    "securityContext.allowPrivilegeEscalation=false)"
)


def test_pods_the_cluster_refuses_to_create_are_named_in_ready_with_the_reason() -> None:
    deployment = ObservedDeployment.from_object(
        {
            "metadata": {"generation": 1},
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": FORBIDDEN,
                    },
                ],
            },
        }
    )
    status = compute_status(observe(deployment=deployment), {}, NOW)
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (status["phase"], ready["status"], ready["reason"]) == ("Deploying", "False", "PodCreationFailed")
    assert ready["message"] == f"0/2 replicas ready; {FORBIDDEN}"
    assert compute_events({}, status) == [("Warning", "PodCreationFailed", ready["message"])]


def test_a_replica_failure_that_cleared_leaves_the_usual_reasons() -> None:
    deployment = ObservedDeployment.from_object(
        {
            "metadata": {"generation": 1},
            "status": {
                "observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                "conditions": [{"type": "ReplicaFailure", "status": "False", "reason": "FailedCreate"}],
            },
        }
    )  # fmt: skip
    assert deployment.replica_failure is None
    status = compute_status(observe(deployment=deployment), {}, NOW)
    assert status["phase"] == "Ready"


def statefulset(replicas: int, created: int, generation: int = 1, seen: int = 1) -> dict[str, object]:
    return {
        "metadata": {
            "namespace": "ml", "uid": "u-1", "generation": generation,
            "labels": {"inferfleet.io/service": "big", "inferfleet.io/replica": "0"},
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": {"inferfleet.io/placement-domain": "rack-a"}},
                "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
            },
        },
        "status": {"observedGeneration": seen, "replicas": created, "readyReplicas": 0},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("sts", "missing"),
    [
        (statefulset(replicas=2, created=0), True),  # synced, and no member could be created
        (statefulset(replicas=2, created=1), True),
        (statefulset(replicas=2, created=2), False),
        (statefulset(replicas=2, created=0, generation=2, seen=1), False),  # not synced yet
    ],
)
def test_a_group_lacks_pods_only_when_its_controller_synced_and_could_not_create_them(
    sts: dict[str, object], missing: bool
) -> None:
    from inferfleet.planning.observed import ObservedGroup

    group = ObservedGroup.from_object(sts)
    assert group is not None
    assert group.pods_missing is missing


def test_refused_group_pods_make_the_service_report_pod_creation_failed() -> None:
    from inferfleet.planning.observed import ObservedGroup
    from inferfleet.planning.status import aggregate_groups

    refused, fine = ObservedGroup.from_object(statefulset(2, 0)), ObservedGroup.from_object(statefulset(2, 2))
    assert refused is not None
    assert fine is not None
    fine = replace(fine, replica=1, ready_pods=2)
    message = f"create Pod big-0-1 in StatefulSet big-0 failed error: {FORBIDDEN}"
    deployment = aggregate_groups([refused, fine], {0: message})
    status = compute_status(observe(deployment=deployment), {}, NOW)
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (status["phase"], ready["reason"]) == ("Degraded", "PodCreationFailed")
    assert ready["message"] == f"1/2 replicas ready; replica group 0: {message}"
    assert aggregate_groups([refused, fine]).replica_failure is None


# ModelConsistent: the spec against the model's known facts.
def model_plan(model: dict[str, Any]) -> ServicePlan:
    spec = InferenceServiceSpec.model_validate({"model": model, "engine": {"kind": "vllm"}})
    h100 = {"H100": ProductCapacity("H100", gpu_memory_gib=79.6, gpus_per_node=8, nodes=1)}
    return plan_service(Owner("llama", "ml", "u"), spec, h100)


LLAMA_8B = {"name": "llama", "source": "hf://meta-llama/Llama-3.1-8B-Instruct"}


def with_model(plan: ServicePlan) -> Observation:
    return replace(observe(plan.blocked), model=plan.model, model_consistent=compute_model_consistent(plan))


def test_a_spec_contradicting_the_known_model_turns_model_consistent_false_with_a_warning_event() -> None:
    agreeing = compute_status(with_model(model_plan({**LLAMA_8B, "parametersBillions": 8.03})), {}, NOW)
    [consistent] = [c for c in agreeing["conditions"] if c["type"] == "ModelConsistent"]
    assert (consistent["status"], consistent["reason"]) == ("True", "SpecMatchesModel")
    assert agreeing["model"]["parameters"] == 8_030_261_248
    assert not [e for e in compute_events({}, agreeing) if e[1] == "SpecMatchesModel"]  # no news

    wrong = {**LLAMA_8B, "parametersBillions": 70, "architecture": {"numLayers": 80, "hiddenSize": 4096,
             "numAttentionHeads": 32, "numKeyValueHeads": 8}}  # fmt: skip
    contradicting = compute_status(with_model(model_plan(wrong)), agreeing, NOW)
    [consistent] = [c for c in contradicting["conditions"] if c["type"] == "ModelConsistent"]
    assert (consistent["status"], consistent["reason"]) == ("False", "SpecContradictsModel")
    origin = "inferfleet's known models (meta-llama/Llama-3.1-8B-Instruct)"
    assert consistent["message"] == (
        f"spec.model.parametersBillions is 70 but {origin} say 8.03 (8,030,261,248 parameters); "
        f"spec.model.architecture.numLayers is 80 but {origin} say 32; the spec's values are used"
    )
    events = compute_events(agreeing, contradicting)
    assert ("Warning", "SpecContradictsModel", consistent["message"]) in events


def test_model_consistent_goes_away_when_nothing_is_known_to_compare_with() -> None:
    known = compute_status(with_model(model_plan({**LLAMA_8B, "parametersBillions": 8.03})), {}, NOW)
    unknown_model = {**LLAMA_8B, "source": "hf://org/m", "parametersBillions": 8}
    unknown = compute_status(with_model(model_plan(unknown_model)), known, NOW)
    assert [c["type"] for c in unknown["conditions"]] == ["Ready"]
    assert unknown["model"] == {"source": "Spec", "parameters": 8_000_000_000, "dtype": "bfloat16"}


def test_waiting_for_model_metadata_is_pending_with_a_warning_event() -> None:
    plan = model_plan({"name": "m", "source": "hf://acme/unknown"})
    status = compute_status(with_model(plan), {}, NOW)
    assert status["phase"] == "Pending"
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "ModelMetadataPending")
    assert compute_events({}, status) == [("Warning", "ModelMetadataPending", ready["message"])]
