"""Worker threads that reconcile the InferenceServices whose keys are on the one work queue.

Every trigger (the service's own events, its children's, node and pod events, a reconcile's
own "look again after") is a key with a trigger name on this queue; one function reconciles a
key. Many triggers of one key collapse into one run, named by the first trigger since the last
run (a status-only trigger gives way to any other: a full reconcile writes status too).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from inferfleet.runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, str]

STATUS_ONLY = "status"
"""The trigger of a child's status change: write the service's status, apply nothing."""
RECHECK = "recheck"
"""The trigger of a reconcile's own request to be looked at again after a delay."""
RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None = None
    """Seconds after which to reconcile the key again though no event may come; None: only on events."""
    gone: bool = False
    """The service no longer exists (or is being deleted): what the process keeps of it goes."""


GONE = Outcome(gone=True)
Work = Callable[[Key, str], Outcome]
"""Reconciles one key for one trigger; raising means it failed and is retried with backoff."""


class ReconcileQueue:
    def __init__(self, workers: int, gone: Callable[[Key], None] = lambda key: None) -> None:
        self._gone = gone
        self._queue: WorkQueue[Key] = WorkQueue()
        self._triggers: dict[Key, str] = {}
        self._lock = threading.Lock()
        self._workers = workers
        self._threads: list[threading.Thread] = []

    def enqueue(self, key: Key, trigger: str, delay: float = 0.0) -> None:
        self._note(key, trigger)
        self._queue.add(key, delay=delay)

    def _note(self, key: Key, trigger: str) -> None:
        with self._lock:
            if self._triggers.get(key, STATUS_ONLY) == STATUS_ONLY:
                self._triggers[key] = trigger

    def forget(self, key: Key) -> None:
        """The service is gone: drop its pending work."""
        with self._lock:
            self._triggers.pop(key, None)
        self._queue.forget(key)

    def pending(self) -> int:
        return len(self._queue)

    def start(self, work: Work) -> None:
        self._threads = [
            threading.Thread(target=self._work, args=(work,), name=f"reconcile-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.close()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _work(self, work: Work) -> None:
        while (key := self._queue.get()) is not None:
            with self._lock:
                trigger = self._triggers.pop(key, "event")
            outcome, failed = Outcome(), False
            try:
                outcome = work(key, trigger)
            except Exception as e:
                failed = True
                self._note(key, RETRY)
                retries = self._queue.failures(key)
                log.warning(f"reconciling {key[0]}/{key[1]} ({trigger}) failed, retry #{retries + 1}: {e}")
            finally:
                self._queue.done(key, failed=failed)
            if outcome.gone:
                self.forget(key)
                self._gone(key)
            elif outcome.requeue_after is not None:
                self.enqueue(key, RECHECK, delay=outcome.requeue_after)
