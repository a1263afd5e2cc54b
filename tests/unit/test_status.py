from datetime import UTC, datetime, timedelta

import pytest

from inferfleet.planning.service import Blocked
from inferfleet.planning.status import Observation, ObservedDeployment, compute_events, compute_status

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
