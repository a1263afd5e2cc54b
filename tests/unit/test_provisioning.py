"""Node autoscaling decisions: which waiting groups ask for nodes, what they ask, when a request
goes, and what the status says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferfleet.api import InferenceServiceSpec, PlacedReason
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import ProductCapacity
from inferfleet.planning.placement import Shortfall
from inferfleet.planning.provisioning import (
    ATOMIC_CLASS,
    CONSUME_ANNOTATION,
    LEGACY_CONSUME_ANNOTATION,
    NOT_SERVED,
    ObservedRequest,
    ProvisioningInputs,
    RequestState,
    build_consuming_children,
    build_noted_shortfalls,
    build_observed_request,
    build_pod_template,
    build_provisioning_request,
    compute_consumers,
    plan_provisioning,
)
from inferfleet.planning.service import GroupInputs, plan_service

EXAMPLES = Path(__file__).parents[2] / "examples"
OWNER = Owner(name="big", namespace="ml", uid="uid-1")
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"


def spec_405b() -> InferenceServiceSpec:
    body = yaml.safe_load((EXAMPLES / "llama-3.1-405b-vllm.yaml").read_text())
    return InferenceServiceSpec.model_validate(body["spec"])


def request(
    replica: int, state: RequestState, count: int = 2, since: datetime | None = None
) -> ObservedRequest:
    return ObservedRequest(f"big-g{replica}", replica, count, state, "said", since, "uid-1", f"r{replica}")


def names(requests: tuple[ObservedRequest, ...]) -> list[str]:
    return [r.name for r in requests]


@pytest.mark.parametrize(
    ("shortfalls", "placed", "requests", "ready", "create", "delete"),
    [
        # A group that does not fit asks once; one request per group, never two.
        ((1,), (0,), [], (0,), (1,), []),
        ((1,), (0,), [request(1, RequestState.PENDING)], (0,), (), []),
        ((1, 2), (), [request(1, RequestState.PENDING)], (), (2,), []),
        # Provisioned: kept while its group is placed and starting (the nodes stay booked) ...
        ((), (1,), [request(1, RequestState.PROVISIONED)], (), (), []),
        # ... and deleted once the group runs.
        ((), (1,), [request(1, RequestState.PROVISIONED)], (1,), (), ["big-g1"]),
        # Capacity freed elsewhere: the group was placed without the request, which goes.
        ((), (1,), [request(1, RequestState.PENDING)], (), (), ["big-g1"]),
        # Scaled down (or the plan is blocked: no shortfalls, nothing placed): no longer wanted.
        (
            (),
            (),
            [request(1, RequestState.PENDING), request(2, RequestState.PROVISIONED)],
            (),
            (),
            ["big-g1", "big-g2"],
        ),
        # Another group shape (a new shard plan): the immutable request is replaced.
        ((1,), (), [request(1, RequestState.PENDING, count=3)], (), (), ["big-g1"]),
        # The nodes a request brought went unused until the booking expired: asked anew.
        ((1,), (), [request(1, RequestState.BOOKING_EXPIRED)], (), (), ["big-g1"]),
    ],
)
def test_which_groups_ask_and_which_requests_go(
    shortfalls: tuple[int, ...],
    placed: tuple[int, ...],
    requests: list[ObservedRequest],
    ready: tuple[int, ...],
    create: tuple[int, ...],
    delete: list[str],
) -> None:
    plan = plan_provisioning(shortfalls, placed, 2, ProvisioningInputs(True, requests, ready, NOW))
    assert (plan.create, names(plan.delete)) == (create, delete)


def test_a_failed_request_is_reported_with_the_autoscalers_words_and_asked_again_later() -> None:
    failed = ObservedRequest(
        "big-g0", 0, 2, RequestState.FAILED, "NodeGroupMax: gpu-h100 is at 4", NOW, "uid-1", "x"
    )
    inputs = ProvisioningInputs(True, [failed], (), NOW + timedelta(minutes=1))
    plan = plan_provisioning((0,), (), 2, inputs)
    assert (plan.create, plan.delete) == ((), ())
    note = plan.notes[0]
    assert note.reason == PlacedReason.NODES_UNAVAILABLE
    assert note.message == (
        "the node autoscaler cannot provide them: ProvisioningRequest big-g0 Failed "
        "(NodeGroupMax: gpu-h100 is at 4); asking again at 2025-01-01T12:05:00+00:00"
    )
    assert plan.recheck_at == NOW + timedelta(minutes=5)
    later = plan_provisioning((0,), (), 2, ProvisioningInputs(True, [failed], (), NOW + timedelta(minutes=5)))
    assert names(later.delete) == ["big-g0"]  # the next reconcile asks again


def test_without_the_api_nothing_is_asked_and_the_status_says_the_group_waits_for_capacity() -> None:
    plan = plan_provisioning((0, 1), (), 2, ProvisioningInputs(False, [], (), NOW))
    assert (plan.create, plan.delete) == ((), ())
    assert {r: n.message for r, n in plan.notes.items()} == {0: NOT_SERVED, 1: NOT_SERVED}
    shortfall = Shortfall("needs 2 nodes with 8 free NVIDIA-H100-80GB-HBM3 GPUs in one inferfleet.io/rack")
    [(_, noted)] = build_noted_shortfalls({0: shortfall}, plan.notes).items()
    assert noted.message == (
        "needs 2 nodes with 8 free NVIDIA-H100-80GB-HBM3 GPUs in one inferfleet.io/rack; "
        "waiting for capacity: this cluster serves no ProvisioningRequest API (autoscaling.x-k8s.io/v1), "
        "so no node autoscaler is asked for these nodes"
    )


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (None, "waiting for nodes: asking the node autoscaler for 2 nodes at once"),
        (
            RequestState.PENDING,
            "waiting for nodes: ProvisioningRequest big-g0 asks the node autoscaler for 2 nodes at once"
            " (said)",
        ),
        (
            RequestState.PROVISIONED,
            "ProvisioningRequest big-g0 is Provisioned; the group is placed once its nodes are in the"
            " inventory",
        ),
    ],
)
def test_a_waiting_group_says_what_it_asked_for(state: RequestState | None, message: str) -> None:
    requests = [] if state is None else [request(0, state)]
    plan = plan_provisioning((0,), (), 2, ProvisioningInputs(True, requests, (), NOW))
    assert plan.notes[0].reason == PlacedReason.WAITING_FOR_NODES
    assert plan.notes[0].message == message


def test_the_request_asks_for_the_whole_group_atomically_with_its_real_pods_in_one_domain() -> None:
    spec = spec_405b()
    products = {H100: ProductCapacity(product=H100, gpu_memory_gib=79.6, gpus_per_node=8, nodes=2)}
    service = plan_service(OWNER, spec, products, GroupInputs())
    assert service.shard_plan is not None
    assert service.shortfalls  # no free nodes: the group waits
    template = build_pod_template(OWNER, spec, service.shard_plan, 0)
    body = build_provisioning_request(OWNER, 0, service.shard_plan.pods_per_replica)

    assert body["spec"] == {
        "provisioningClassName": ATOMIC_CLASS,
        "podSets": [{"podTemplateRef": {"name": "big-g0"}, "count": 2}],
    }
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert template["metadata"]["name"] == "big-g0"
    pod = template["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == H100
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    selector = {"matchLabels": {"inferfleet.io/service": "big", "inferfleet.io/replica": "0"}}
    assert pod["affinity"] == {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": selector, "topologyKey": spec.sharding.topology_key}
            ]
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}
            ]
        },
    }
    assert template["template"]["metadata"]["labels"]["inferfleet.io/replica"] == "0"


def status(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"conditions": list(conditions)}


@pytest.mark.parametrize(
    ("status_", "state", "message"),
    [
        ({}, RequestState.PENDING, ""),
        (
            status(
                {"type": "Accepted", "status": "True"},
                {
                    "type": "Provisioned",
                    "status": "False",
                    "reason": "CapacityIsNotFound",
                    "message": "no node group fits",
                },
            ),
            RequestState.PENDING,
            "CapacityIsNotFound: no node group fits",
        ),
        (
            status({"type": "Provisioned", "status": "True", "reason": "Provisioned"}),
            RequestState.PROVISIONED,
            "Provisioned",
        ),
        (
            status(
                {"type": "Provisioned", "status": "False"},
                {"type": "Failed", "status": "True", "reason": "NodeGroupMax", "message": "at 4"},
            ),
            RequestState.FAILED,
            "NodeGroupMax: at 4",
        ),
        (
            status({"type": "Provisioned", "status": "True"}, {"type": "BookingExpired", "status": "True"}),
            RequestState.BOOKING_EXPIRED,
            "",
        ),
    ],
)
def test_the_autoscalers_answer_is_read_from_its_conditions(
    status_: dict[str, Any], state: RequestState, message: str
) -> None:
    body = build_provisioning_request(OWNER, 3, 2)
    body["metadata"]["uid"] = "r3"
    observed = build_observed_request({**body, "status": status_})
    assert observed is not None
    assert (observed.replica, observed.count, observed.state, observed.message) == (3, 2, state, message)
    assert observed.owner_uid == "uid-1"


def test_a_request_not_made_by_the_operator_is_ignored() -> None:
    assert build_observed_request({"metadata": {"name": "x", "labels": {}}, "spec": {}}) is None


def group(replica: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": f"big-g{replica}", "labels": {"inferfleet.io/replica": str(replica)}},
        "spec": {"template": {"metadata": {"annotations": annotations or {"a": "b"}}, "spec": {}}},
    }


def test_pods_of_a_group_placed_on_provisioned_nodes_consume_the_request_and_keep_saying_so() -> None:
    provisioned = [request(1, RequestState.PROVISIONED), request(2, RequestState.PENDING)]
    # Group 0 existed before (no annotation: adding one would restart it); group 1 is new on its
    # request's nodes; group 2's request is still pending; group 3 was created consuming one.
    consumers = compute_consumers(provisioned, existing=(0,), consuming={3: "big-g3"})
    assert consumers == {1: "big-g1", 3: "big-g3"}
    children = build_consuming_children(
        [group(0), group(1), group(2), group(3), {"kind": "Service", "metadata": {}}], consumers
    )
    annotations = [c["spec"]["template"]["metadata"]["annotations"] for c in children[:4]]
    assert [a.get(CONSUME_ANNOTATION) for a in annotations] == [None, "big-g1", None, "big-g3"]
    assert annotations[1][LEGACY_CONSUME_ANNOTATION] == "big-g1"
    assert annotations[1]["a"] == "b"  # the template's own annotations stay
    assert children[4] == {"kind": "Service", "metadata": {}}
