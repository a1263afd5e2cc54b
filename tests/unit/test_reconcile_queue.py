"""Reconcile triggers: a child's status change only writes status; any other trigger reconciles."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from inferfleet.handlers.reconcile_queue import STATUS_ONLY, ReconcileQueue
from inferfleet.handlers.state import ServiceState, forget_service, service_state

pytestmark = pytest.mark.unit

KEY = ("ml", "llama")


class _View:
    def service(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return {"metadata": {"namespace": key[0], "name": key[1]}}


class _Calls:
    def __init__(self, expected: int) -> None:
        self.calls: list[tuple[str, str]] = []
        self._expected, self._done = expected, threading.Event()

    def reconcile(self, api: Any, body: Any, view: Any, logger: Any, trigger: str) -> None:
        self.calls.append(("reconcile", trigger))
        if len(self.calls) >= self._expected:
            self._done.set()

    def refresh(self, api: Any, body: Any, view: Any, logger: Any) -> None:
        self.calls.append(("status", ""))
        if len(self.calls) >= self._expected:
            self._done.set()

    def wait(self) -> None:
        assert self._done.wait(timeout=5), f"calls so far: {self.calls}"


def _run(triggers: list[str]) -> list[tuple[str, str]]:
    calls = _Calls(expected=1)
    queue = ReconcileQueue(None, _View(), calls.reconcile, calls.refresh, workers=1)  # type: ignore[arg-type]
    for trigger in triggers:  # queued before a worker runs: they coalesce into one run
        queue.enqueue(KEY, trigger)
    queue.start()
    calls.wait()
    queue.stop()
    return calls.calls


def test_a_status_change_alone_writes_status_and_applies_nothing() -> None:
    assert _run([STATUS_ONLY, STATUS_ONLY]) == [("status", "")]


@pytest.mark.parametrize("order", [["unschedulable", STATUS_ONLY], [STATUS_ONLY, "unschedulable"]])
def test_any_other_trigger_queued_with_a_status_change_wins_the_coalesced_run(order: list[str]) -> None:
    assert _run(order) == [("reconcile", "unschedulable")]


def _deployment(version: int, generation: int, ready: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": str(version), "generation": generation},
        "status": {"observedGeneration": generation, "readyReplicas": ready, "replicas": 1},
    }


def test_the_newest_offered_deployment_is_folded_in_and_an_older_one_never_replaces_it() -> None:
    state = ServiceState()
    state.offer_deployment(_deployment(12, 1, ready=1))
    state.offer_deployment(_deployment(10, 1, ready=0))  # a late, older event
    state.take_offered()
    assert state.deployment is not None
    assert state.deployment.ready_replicas == 1
    state.offer_deployment(_deployment(11, 1, ready=0))  # older than what was folded
    state.take_offered()
    assert state.deployment.ready_replicas == 1
    state.offer_deployment(_deployment(13, 1), deleted=True)
    state.take_offered()
    assert state.deployment is None


def test_an_offer_with_a_generation_the_operator_did_not_apply_is_an_edit() -> None:
    state = ServiceState()
    assert not state.offer_deployment(_deployment(5, 3))  # nothing applied yet: nothing to compare
    state.applied_generation = 3
    assert not state.offer_deployment(_deployment(6, 3, ready=1))  # a status change
    assert state.offer_deployment(_deployment(7, 4))  # someone changed the spec
    assert not state.offer_deployment(_deployment(8, 4), deleted=True)  # deletion is reported apart


def test_a_new_object_under_an_old_name_does_not_inherit_the_old_ones_state() -> None:
    key = ("ml", "reused-name")
    old = service_state(key, "uid-1")
    old.written_status = {"phase": "Ready"}
    old.reconciled = ("uid-1", 1)
    assert service_state(key, "uid-1") is old
    new = service_state(key, "uid-2")  # deleted and created again, the deletion unseen
    assert new.written_status is None
    assert new.reconciled is None
    forget_service(key)


def test_a_reconcile_that_asks_to_be_looked_at_again_runs_again_after_that_delay() -> None:
    runs: list[tuple[str, float]] = []
    done = threading.Event()
    started = time.monotonic()

    def reconcile(api: Any, body: Any, view: Any, logger: Any, trigger: str) -> float | None:
        runs.append((trigger, time.monotonic() - started))
        if len(runs) == 2:
            done.set()
        return 0.3 if len(runs) == 1 else None

    queue = ReconcileQueue(None, _View(), reconcile, lambda *_: None, workers=1)  # type: ignore[arg-type]
    queue.enqueue(KEY, "inferenceservice")
    queue.start()
    assert done.wait(timeout=5), runs
    queue.stop()
    assert [trigger for trigger, _ in runs] == ["inferenceservice", "recheck"]
    assert runs[1][1] - runs[0][1] >= 0.3


def test_a_service_deleted_during_its_reconcile_leaves_no_state_series_or_queued_work() -> None:
    """The reconcile records state and gauges after the deletion was handled: they go too."""
    from prometheus_client import REGISTRY

    from inferfleet.handlers.inferenceservice import forget
    from inferfleet.handlers.state import known_services
    from inferfleet.metrics.operator import SCALING_DECISIONS, record_replicas

    deleted = threading.Event()
    key = ("ml", "gone")

    class _DeletedView:
        def service(self, k: tuple[str, str]) -> dict[str, Any] | None:
            return None if deleted.is_set() else {"metadata": {"namespace": k[0], "name": k[1]}}

    finished = threading.Event()

    def reconcile(api: Any, body: Any, view: Any, logger: Any, trigger: str) -> float:
        service_state(key, "uid-1").written_status = {"phase": "Ready"}
        record_replicas(*key, desired=2, ready=2)
        SCALING_DECISIONS.labels(*key, "up", "LoadAboveCapacity").inc()
        deleted.set()  # the object is deleted while its reconcile runs
        finished.set()
        return 30.0  # asks for a recheck the deletion must cancel

    queue = ReconcileQueue(None, _DeletedView(), reconcile, lambda *a: None, workers=1, gone=forget)  # type: ignore[arg-type]
    queue.enqueue(key, "inferenceservice")
    queue.start()
    assert finished.wait(timeout=5)
    queue.stop()
    assert key not in known_services()
    assert len(queue._queue) == 0
    series = [
        s.labels
        for family in REGISTRY.collect()
        for s in family.samples
        if s.labels.get("namespace") == "ml" and s.labels.get("name") == "gone"
    ]
    assert series == []
