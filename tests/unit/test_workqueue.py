"""The reconcile work queue: coalescing, one worker per key, backoff on failure, clean shutdown."""

from __future__ import annotations

import threading
import time

from inferfleet.runtime.workqueue import WorkQueue


def test_many_adds_of_one_key_coalesce_into_one_item() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert {q.get(timeout=0.1), q.get(timeout=0.1)} == {"a", "b"}
    assert q.get(timeout=0.05) is None


def test_a_key_added_while_processing_waits_for_done_and_runs_once_more() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0.1) == "a"
    q.add("a")
    q.add("a")
    assert q.get(timeout=0.05) is None  # a second worker never gets a key in processing
    q.done("a")
    assert q.get(timeout=0.1) == "a"
    q.done("a")
    assert q.get(timeout=0.05) is None


def test_a_failure_is_retried_after_its_backoff_and_a_success_resets_it() -> None:
    q: WorkQueue[str] = WorkQueue(backoff=(0.2, 0.4))
    q.add("a")
    assert q.get(timeout=0.1) == "a"
    failed_at = time.monotonic()
    q.done("a", failed=True)
    assert q.failures("a") == 1
    assert q.get(timeout=0.05) is None
    assert q.get(timeout=1) == "a"
    assert time.monotonic() - failed_at >= 0.2
    q.done("a")
    assert q.failures("a") == 0


def test_backoff_grows_per_failure_up_to_the_last_step() -> None:
    q: WorkQueue[str] = WorkQueue(backoff=(0.1, 0.3))
    q.add("a")
    assert q.get(timeout=0.1) == "a"
    waited = []
    for _ in range(3):
        failed_at = time.monotonic()
        q.done("a", failed=True)
        assert q.get(timeout=2) == "a"
        waited.append(time.monotonic() - failed_at)
    assert 0.1 <= waited[0] < 0.3
    assert waited[1] >= 0.3
    assert waited[2] >= 0.3  # capped at the last step
    assert q.failures("a") == 3


def test_an_earlier_add_supersedes_a_later_due_time() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", delay=60)
    q.add("a")
    assert q.get(timeout=0.1) == "a"


def test_forget_drops_a_pending_key() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.forget("a")
    assert q.get(timeout=0.05) is None


def test_close_wakes_a_waiting_worker() -> None:
    q: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(q.get()))
    worker.start()
    q.close()
    worker.join(timeout=2)
    assert not worker.is_alive()
    assert got == [None]
