"""The one reconcile of a key, with a fake Kubernetes API: what is applied, deleted and written."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from inferfleet.handlers.calls import ApplyError
from inferfleet.handlers.logs import service_logger
from inferfleet.handlers.reconciler import SERVICE_TRIGGER, Service, reconcile, work
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.requeue import NAME_CONFLICT_RECHECK, POOL_CONFLICT_RECHECK
from inferfleet.runtime.queue import GONE, STATUS_ONLY, Outcome
from tests.unit.kube_fakes import SMALL_SPEC, FakeKube, a100, ready_condition, refused, runtime, service, view

pytestmark = pytest.mark.unit


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    return FakeKube(monkeypatch)


def run(rt: Any, v: Any, body: dict[str, Any]) -> float | None:
    return reconcile(rt, v, Service.from_snapshot(body), service_logger(body), SERVICE_TRIGGER)


def test_a_new_service_gets_its_children_applied_reachable_ones_first_and_its_status_written(
    kube: FakeKube,
) -> None:
    rt, body = runtime(), service()
    assert run(rt, view([body], [a100("a-1")]), body) is None
    assert [kind for kind, _ in kube.applied] == ["Service", "PodDisruptionBudget", "Deployment"]
    assert len(kube.statuses) == 1
    assert kube.statuses[0]["endpoint"] == "http://llama.ml.svc:8000/v1"
    assert rt.state(("ml", "llama"), "uid-llama").children.keys() >= {("Deployment", "llama")}


def test_an_idle_reconcile_writes_nothing(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    v = view([body], [a100("a-1")])
    run(rt, v, body)
    run(rt, v, body)
    assert len(kube.statuses) == 1  # the second computed the same status: no write, no Event
    assert [reason for _, reason, _ in kube.events].count("Placed") <= 1


def test_an_invalid_spec_applies_nothing_and_says_why_in_ready(kube: FakeKube) -> None:
    rt = runtime()
    body = service(spec={**SMALL_SPEC, "replicas": "two"})
    run(rt, view([body], [a100("a-1")]), body)
    assert kube.applied == []
    status, reason, message = ready_condition(kube.statuses[-1])
    assert (status, reason) == ("False", "InvalidSpec")
    assert message.startswith("spec rejected: replicas:")


def test_a_child_name_taken_by_someone_else_is_a_name_conflict_looked_at_again_later(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.taken.add("llama")
    assert run(rt, view([body], [a100("a-1")]), body) == NAME_CONFLICT_RECHECK
    assert kube.applied == []  # the Service came first: no engine pod for an unreachable service
    status, reason, message = ready_condition(kube.statuses[-1])
    assert (status, reason) == ("False", "NameConflict")
    assert "Service llama" in message


def test_an_apply_the_api_server_refuses_is_reported_with_its_words_and_retried(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.refuse["Deployment"] = refused(422, "spec.template: Invalid value")
    with pytest.raises(ApplyError, match=r"applying Deployment llama was refused \(422\)"):
        run(rt, view([body], [a100("a-1")]), body)
    status, reason, message = ready_condition(kube.statuses[-1])
    assert (status, reason) == ("False", "ApplyFailed")
    assert "spec.template: Invalid value" in message


def test_where_pools_are_served_the_pool_is_applied_last(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.pools_served = True
    assert run(rt, view([body], [a100("a-1")]), body) is None
    assert kube.applied == [
        ("Service", "llama"),
        ("PodDisruptionBudget", "llama"),
        ("Deployment", "llama"),
        ("InferencePool", "llama"),
    ]
    run(rt, view([body], [a100("a-1")]), body)
    assert kube.discoveries == 1  # asked once a minute, not per reconcile


def test_a_pool_refused_never_fails_the_service_and_is_warned_about_once(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.pools_served = True
    kube.refuse["InferencePool"] = refused(422, "spec.endpointPickerRef: Required value")
    for _ in range(2):
        assert run(rt, view([body], [a100("a-1")]), body) is None
    assert ("Deployment", "llama") in kube.applied
    assert ready_condition(kube.statuses[-1])[1] != "ApplyFailed"
    warnings = [e for e in kube.events if e[1] == "InferencePoolNotApplied"]
    assert len(warnings) == 1
    assert "spec.endpointPickerRef: Required value" in warnings[0][2]


def test_a_pool_api_gone_since_discovery_is_asked_about_again(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.pools_served = True
    kube.refuse["InferencePool"] = refused(404, "the server could not find the requested resource")
    assert run(rt, view([body], [a100("a-1")]), body) is None
    kube.pools_served = False  # its CRD was deleted
    run(rt, view([body], [a100("a-1")]), body)
    assert kube.discoveries == 2
    assert not [e for e in kube.events if e[1] == "InferencePoolNotApplied"]


def test_a_pool_name_held_by_another_object_is_left_and_looked_at_again_later(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.pools_served = True
    kube.taken_pools.add("llama")
    assert run(rt, view([body], [a100("a-1")]), body) == POOL_CONFLICT_RECHECK
    assert ("Deployment", "llama") in kube.applied
    assert ready_condition(kube.statuses[-1])[1] != "NameConflict"  # the service itself serves
    [warning] = [e for e in kube.events if e[1] == "InferencePoolNotApplied"]
    assert "already exists and is not controlled" in warning[2]


def test_a_failed_pool_discovery_leaves_the_pool_out_and_fails_nothing(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    kube.discovery_error = refused(500, "etcd leader changed")
    assert run(rt, view([body], [a100("a-1")]), body) is None
    assert [kind for kind, _ in kube.applied] == ["Service", "PodDisruptionBudget", "Deployment"]
    kube.discovery_error, kube.pools_served = None, True
    run(rt, view([body], [a100("a-1")]), body)  # a failed ask is not kept: asked again
    assert ("InferencePool", "llama") in kube.applied


def test_a_literal_secret_in_the_spec_is_warned_about_once_per_generation(kube: FakeKube) -> None:
    rt = runtime()
    spec = {**SMALL_SPEC, "engine": {"kind": "vllm", "env": [{"name": "HF_TOKEN", "value": "hf_abc"}]}}
    body = service(spec=spec)
    v = view([body], [a100("a-1")])
    run(rt, v, body)
    run(rt, v, body)
    warnings = [e for e in kube.events if e[1] == "LiteralSecretInSpec"]
    assert len(warnings) == 1
    assert "HF_TOKEN" in warnings[0][2]


def test_without_a_matching_gpu_the_service_waits_and_names_the_products_there_are(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    run(rt, view([body], []), body)
    status, reason, message = ready_condition(kube.statuses[-1])
    assert (status, reason) == ("False", "NoMatchingNodes")
    assert "products in the cluster: none" in message


def group(replica: int, nodes: tuple[str, ...]) -> ObservedGroup:
    return ObservedGroup(
        namespace="ml", service="llama", replica=replica, uid=f"sts-{replica}", domain="a", nodes=nodes,
        gpus_per_pod=8, pods=len(nodes), ready_pods=len(nodes), generation=1, observed_generation=1,
        owner_uid="uid-llama",
    )  # fmt: skip


def test_a_group_on_a_lost_node_is_deleted_to_restart_whole(
    kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    rt, body = runtime(), service()
    v = view([body], [a100("a-1")], groups=[group(0, ("a-1", "gone-1"))])
    with caplog.at_level(logging.WARNING):
        run(rt, v, body)
    assert kube.deleted_groups == [0]
    assert "replica group 0 lost ['gone-1']" in caplog.text


def test_work_on_a_key_whose_service_is_gone_or_going_forgets_it(kube: FakeKube) -> None:
    rt = runtime()
    going = service()
    going["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:00Z"
    assert work(rt, view([]), ("ml", "llama"), SERVICE_TRIGGER) is GONE
    assert work(rt, view([going]), ("ml", "llama"), SERVICE_TRIGGER) is GONE
    assert (kube.applied, kube.statuses) == ([], [])


def test_work_for_a_status_change_writes_status_and_applies_nothing(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    v = view([body], [a100("a-1")])
    run(rt, v, body)
    applied, written = len(kube.applied), len(kube.statuses)
    deployment = {
        "metadata": {"resourceVersion": "99", "generation": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1, "replicas": 1, "updatedReplicas": 1},
    }
    rt.state(("ml", "llama"), "uid-llama").offer_deployment(deployment)
    assert work(rt, v, ("ml", "llama"), STATUS_ONLY) == Outcome()
    assert len(kube.applied) == applied
    assert len(kube.statuses) == written + 1
    assert kube.statuses[-1]["readyReplicas"] == 1


def test_a_status_change_before_this_process_reconciled_the_service_writes_nothing(
    kube: FakeKube,
) -> None:
    # After a restart the first pod events come before the Deployment's: a status computed then
    # would say 0 ready replicas over the 1 the previous process wrote.
    rt, body = runtime(), service()
    body["status"] = {"readyReplicas": 1, "replicas": 1, "phase": "Ready"}
    assert work(rt, view([body], [a100("a-1")]), ("ml", "llama"), STATUS_ONLY) == Outcome()
    assert kube.applied == []
    assert kube.statuses == []


def test_work_for_any_other_trigger_reconciles(kube: FakeKube) -> None:
    rt, body = runtime(), service()
    assert work(rt, view([body], [a100("a-1")]), ("ml", "llama"), "deployment") == Outcome()
    assert ("Deployment", "llama") in kube.applied
