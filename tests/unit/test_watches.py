"""Watch events become keys on the one work queue; which events enqueue what."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from inferfleet.handlers import watches
from inferfleet.handlers.indexes import ClusterView
from inferfleet.planning.observed import ObservedGroup
from inferfleet.runtime.operator import OperatorRuntime
from tests.unit.kube_fakes import FakeKube, a100, runtime, service, view

pytestmark = pytest.mark.unit
KEY = ("ml", "llama")
LOG = logging.getLogger("test")


def queued(rt: OperatorRuntime) -> dict[tuple[str, str], str]:
    return dict(rt.queue._triggers)


def kwargs(v: ClusterView) -> dict[str, Any]:
    return {
        "inference_services": v.services,
        "gpu_nodes": v.nodes,
        "gpu_pods": v.pods,
        "engine_groups": v.groups,
        "engine_pods": v.service_pods,
        "stuck_group_pods": v.stuck,
    }


def service_event(rt: OperatorRuntime, type_: str | None, body: dict[str, Any]) -> None:
    asyncio.run(watches.on_event_inferenceservice(type=type_, body=body, memo={"runtime": rt}))  # type: ignore[arg-type]


def test_the_initial_listing_and_a_spec_change_enqueue_the_service_and_a_status_write_does_not() -> None:
    rt = runtime()
    service_event(rt, None, service(generation=3))  # listed at startup: a restart resumes
    assert queued(rt) == {KEY: "inferenceservice"}
    rt.queue.forget(KEY)
    service_event(rt, "MODIFIED", {**service(generation=3), "status": {"phase": "Ready"}})
    assert queued(rt) == {}
    service_event(rt, "MODIFIED", service(generation=4))
    assert queued(rt) == {KEY: "inferenceservice"}


def test_a_deleted_service_leaves_no_state_or_pending_work() -> None:
    rt = runtime()
    service_event(rt, "ADDED", service())
    service_event(rt, "DELETED", service())
    assert (queued(rt), rt.queue.pending()) == ({}, 0)
    assert rt.states.known() == []


def waiting(name: str) -> dict[str, Any]:
    body = service(name)
    body["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "InsufficientCapacity"}]}
    return body


def test_a_new_gpu_node_retries_the_services_waiting_for_gpus_only() -> None:
    rt = runtime()
    v = view([waiting("waits"), service("fine")], [a100("a-1")])
    asyncio.run(
        watches.on_event_node(type="ADDED", name="a-1", memo={"runtime": rt}, logger=LOG, **kwargs(v))
    )  # type: ignore[arg-type]
    assert queued(rt) == {("ml", "waits"): "capacity"}
    rt.queue.forget(("ml", "waits"))
    asyncio.run(
        watches.on_event_node(type="MODIFIED", name="a-1", memo={"runtime": rt}, logger=LOG, **kwargs(v))
    )  # type: ignore[arg-type]
    assert queued(rt) == {}  # the same inventory: a heartbeat retries nobody


def test_a_deleted_node_wakes_the_service_with_a_group_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeKube(monkeypatch)
    rt = runtime()
    group = ObservedGroup(
        namespace="ml", service="llama", replica=0, uid="sts-0", domain="a", nodes=("a-1", "a-2"),
        gpus_per_pod=8, pods=2, ready_pods=2, generation=1, observed_generation=1, owner_uid="uid-llama",
    )  # fmt: skip
    v = view([service()], [a100("a-2")], groups=[group])
    asyncio.run(
        watches.on_event_node(type="DELETED", name="a-1", memo={"runtime": rt}, logger=LOG, **kwargs(v))
    )  # type: ignore[arg-type]
    assert queued(rt)[KEY] == "node"


def test_a_deleted_group_member_restarts_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKube(monkeypatch)
    rt = runtime()
    group = ObservedGroup(
        namespace="ml", service="llama", replica=1, uid="sts-1", domain="a", nodes=("a-1",),
        gpus_per_pod=8, pods=1, ready_pods=1, generation=1, observed_generation=1, owner_uid="uid-llama",
    )  # fmt: skip
    v = view([service()], [a100("a-1")], groups=[group])
    pod = {
        "metadata": {"name": "llama-g1-0", "ownerReferences": [{"uid": "sts-1"}]},
        "spec": {"nodeName": "a-1"},
    }
    labels = {"inferfleet.io/service": "llama", "inferfleet.io/replica": "1"}

    def pod_deleted() -> None:
        asyncio.run(
            watches.on_event_pod(
                type="DELETED",
                body=pod,
                namespace="ml",
                labels=labels,
                memo={"runtime": rt},
                logger=LOG,
                **kwargs(v),
            )  # type: ignore[arg-type]
        )

    pod_deleted()
    assert kube.deleted_groups == [1]
    pod["metadata"]["ownerReferences"] = [{"uid": "sts-old"}]  # the restart's own deletions do not loop
    pod_deleted()
    assert kube.deleted_groups == [1]


def deployment(generation: int, uid: str = "uid-llama") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "llama", "uid": "dep", "resourceVersion": str(generation), "generation": generation,
            "ownerReferences": [{"uid": uid, "controller": True, "kind": "InferenceService",
                                 "apiVersion": "inferfleet.io/v1alpha1", "name": "llama"}],
        },
        "status": {"observedGeneration": generation, "readyReplicas": 1, "replicas": 1},
    }  # fmt: skip


def deployment_event(rt: OperatorRuntime, type_: str, body: dict[str, Any], v: ClusterView) -> None:
    asyncio.run(
        watches.on_event_deployment(
            type=type_, body=body, namespace="ml", labels={"inferfleet.io/service": "llama"},
            memo={"runtime": rt}, logger=LOG, **kwargs(v),
        )  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_deployments_status_change_refreshes_status_and_a_hand_edit_reconciles() -> None:
    rt, v = runtime(), view([service()])
    rt.state(KEY, "uid-llama").applied_generation = 1
    deployment_event(rt, "MODIFIED", deployment(1), v)
    assert queued(rt) == {KEY: "status"}
    deployment_event(rt, "MODIFIED", deployment(2), v)  # someone edited it
    assert queued(rt) == {KEY: "deployment"}


def test_a_deployment_the_service_does_not_control_wakes_nothing() -> None:
    rt, v = runtime(), view([service()])
    deployment_event(rt, "MODIFIED", deployment(1, uid="uid-someone-else"), v)
    assert queued(rt) == {}
