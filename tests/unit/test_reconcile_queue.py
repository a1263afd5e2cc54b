"""Reconcile triggers: a child's status change only writes status; any other trigger reconciles."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from inferfleet.localcluster.waiting import wait_for
from inferfleet.runtime.config import OperatorConfig
from inferfleet.runtime.operator import OperatorRuntime
from inferfleet.runtime.queue import GONE, RECHECK, STATUS_ONLY, Outcome, ReconcileQueue
from inferfleet.runtime.state import ServiceState, ServiceStates

pytestmark = pytest.mark.unit

KEY = ("ml", "llama")


class _Calls:
    def __init__(self, expected: int) -> None:
        self.calls: list[tuple[tuple[str, str], str]] = []
        self._expected, self._done = expected, threading.Event()

    def work(self, key: tuple[str, str], trigger: str) -> Outcome:
        self.calls.append((key, trigger))
        if len(self.calls) >= self._expected:
            self._done.set()
        return Outcome()

    def wait(self) -> None:
        assert self._done.wait(timeout=5), f"calls so far: {self.calls}"


def _run(triggers: list[str]) -> list[tuple[tuple[str, str], str]]:
    calls = _Calls(expected=1)
    queue = ReconcileQueue(workers=1)
    for trigger in triggers:  # queued before a worker runs: they coalesce into one run
        queue.enqueue(KEY, trigger)
    queue.start(calls.work)
    calls.wait()
    queue.stop()
    return calls.calls


def test_a_status_change_alone_is_one_status_only_run() -> None:
    assert _run([STATUS_ONLY, STATUS_ONLY]) == [(KEY, STATUS_ONLY)]


@pytest.mark.parametrize("order", [["unschedulable", STATUS_ONLY], [STATUS_ONLY, "unschedulable"]])
def test_any_other_trigger_queued_with_a_status_change_wins_the_coalesced_run(order: list[str]) -> None:
    assert _run(order) == [(KEY, "unschedulable")]


def test_a_failed_run_is_retried_as_a_retry_after_its_backoff() -> None:
    calls: list[str] = []
    done = threading.Event()

    def work(key: tuple[str, str], trigger: str) -> Outcome:
        calls.append(trigger)
        if len(calls) == 1:
            raise RuntimeError("the API server said no")
        done.set()
        return Outcome()

    queue = ReconcileQueue(workers=1)
    queue.enqueue(KEY, "inferenceservice")
    queue.start(work)
    assert done.wait(timeout=5), calls
    queue.stop()
    assert calls == ["inferenceservice", "retry"]


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
    states = ServiceStates()
    old = states.get(key, "uid-1")
    old.written_status = {"phase": "Ready"}
    old.seen_generation = 1
    assert states.get(key, "uid-1") is old
    new = states.get(key, "uid-2")  # deleted and created again, the deletion unseen
    assert new.written_status is None
    assert new.seen_generation is None


def test_a_reconcile_that_asks_to_be_looked_at_again_runs_again_after_that_delay() -> None:
    runs: list[tuple[str, float]] = []
    done = threading.Event()
    started = time.monotonic()

    def work(key: tuple[str, str], trigger: str) -> Outcome:
        runs.append((trigger, time.monotonic() - started))
        if len(runs) == 2:
            done.set()
        return Outcome(requeue_after=0.3 if len(runs) == 1 else None)

    queue = ReconcileQueue(workers=1)
    queue.enqueue(KEY, "inferenceservice")
    queue.start(work)
    assert done.wait(timeout=5), runs
    queue.stop()
    assert [trigger for trigger, _ in runs] == ["inferenceservice", RECHECK]
    assert runs[1][1] - runs[0][1] >= 0.3


def test_a_service_deleted_during_its_reconcile_leaves_no_state_series_or_queued_work() -> None:
    """The reconcile records state and gauges after the deletion was handled: they go too."""
    from prometheus_client import REGISTRY

    from inferfleet.metrics.operator import SCALING_DECISIONS, forget_service_metrics, record_replicas

    runtime = OperatorRuntime(OperatorConfig(workers=1))
    runtime.on_forget(lambda k: forget_service_metrics(*k))
    key = ("ml", "gone")
    finished = threading.Event()

    def work(k: tuple[str, str], trigger: str) -> Outcome:
        runtime.state(key, "uid-1").written_status = {"phase": "Ready"}
        record_replicas(*key, desired=2, ready=2)
        SCALING_DECISIONS.labels(*key, "up", "LoadAboveCapacity").inc()
        finished.set()
        return GONE  # deleted while it ran; a recheck it might have asked for is cancelled too

    runtime.queue.enqueue(key, "inferenceservice")
    runtime.queue.enqueue(key, RECHECK, delay=30.0)
    runtime.queue.start(work)
    assert finished.wait(timeout=5)
    wait_for(lambda: key not in runtime.states.known() or None, timeout=5, what="the state to go")
    runtime.stop()
    assert runtime.queue.pending() == 0
    series = [
        s.labels
        for family in REGISTRY.collect()
        for s in family.samples
        if s.labels.get("namespace") == "ml" and s.labels.get("name") == "gone"
    ]
    assert series == []
