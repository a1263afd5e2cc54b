"""A service's InferencePool: the pods its own Service reaches, on the engine's port, named picker."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.api.status import ReadyReason
from inferfleet.planning.inference_pool import EndpointPicker, plan_inference_pool
from inferfleet.planning.service import Blocked, ServicePlan
from tests.unit.status_golden_cases import OWNER, multi_plan, single_plan

pytestmark = pytest.mark.unit


def _pool(plan: ServicePlan) -> dict[str, Any]:
    [pool] = [c for c in plan.children if c["kind"] == "InferencePool"]
    return pool


def _client_service(plan: ServicePlan) -> dict[str, Any]:
    [service] = [c for c in plan.children if c["kind"] == "Service" and c["metadata"]["name"] == OWNER.name]
    return service


@pytest.mark.parametrize(
    ("plan", "selector"),
    [
        (single_plan(), {"inferfleet.io/service": "svc"}),
        # a multi-node replica serves HTTP on its leader (rank 0) only, as its Service selects
        (multi_plan(), {"inferfleet.io/service": "svc", "apps.kubernetes.io/pod-index": "0"}),
    ],
    ids=["single-node", "multi-node"],
)
def test_the_pool_selects_what_the_service_reaches_on_its_port(
    plan: ServicePlan, selector: dict[str, str]
) -> None:
    pool = _pool(plan_inference_pool(plan, OWNER.name, EndpointPicker()))
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"] == {"matchLabels": selector}
    assert pool["spec"]["selector"]["matchLabels"] == _client_service(plan)["spec"]["selector"]
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["metadata"]["ownerReferences"] == _client_service(plan)["metadata"]["ownerReferences"]
    assert (pool["metadata"]["name"], pool["metadata"]["namespace"]) == ("svc", "ml")


@pytest.mark.parametrize(
    ("picker", "ref"),
    [
        (
            EndpointPicker(),
            {"kind": "Service", "name": "svc-epp", "port": {"number": 9002}, "failureMode": "FailClose"},
        ),
        (
            EndpointPicker("shared-picker", 9100, "FailOpen"),
            {"kind": "Service", "name": "shared-picker", "port": {"number": 9100}, "failureMode": "FailOpen"},
        ),
    ],
    ids=["per-service-default", "one-shared-picker"],
)
def test_the_pool_names_the_configured_picker(picker: EndpointPicker, ref: dict[str, Any]) -> None:
    assert _pool(plan_inference_pool(single_plan(), OWNER.name, picker))["spec"]["endpointPickerRef"] == ref


def test_a_plan_without_the_service_gets_no_pool() -> None:
    blocked = ServicePlan(blocked=Blocked(ReadyReason.INVALID_SPEC, "no"))
    assert plan_inference_pool(blocked, OWNER.name, EndpointPicker()) == blocked
