"""A coalescing, rate-limited work queue of InferenceService keys, like client-go's workqueue.

Watch events of nodes, pods and children only say "this service should be looked at again".
Many events for one service collapse into one pending item; an item is never processed by two
workers at once (one added while it runs is processed once more after); a failed reconcile is
retried with per-key exponential backoff instead of being lost, and one service's failure never
stops the others.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        backoff: tuple[float, ...] = BACKOFF_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backoff, self._clock = backoff, clock
        self._cond = threading.Condition()
        self._due: dict[K, float] = {}  # pending items and when they may run
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        self._processing: set[K] = set()
        self._again: dict[K, float] = {}  # added while processing: re-queued by done()
        self._failures: dict[K, int] = {}
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        with self._cond:
            due = self._clock() + delay
            if key in self._processing:
                self._again[key] = min(due, self._again.get(key, due))
                return
            if key in self._due and self._due[key] <= due:
                return  # already pending, sooner: coalesced
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, key))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key, now in processing; None when closed or after `timeout` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier due time
                now = self._clock()
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._processing.add(key)
                    return key
                waits = [
                    t - now for t in (self._heap[0][0] if self._heap else None, deadline) if t is not None
                ]
                if deadline is not None and deadline <= now:
                    return None
                self._cond.wait(timeout=min(waits) if waits else None)
            return None

    def done(self, key: K, *, failed: bool = False) -> None:
        """Finish processing `key`; a failure re-adds it after its backoff, a success resets it."""
        with self._cond:
            self._processing.discard(key)
            again = self._again.pop(key, None)
            if failed:
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = self._backoff[min(count, len(self._backoff) - 1)]
            else:
                self._failures.pop(key, None)
                delay = None
        if failed:
            self.add(key, delay=delay or 0.0)
        if again is not None:
            self.add(key, delay=max(0.0, again - self._clock()))

    def forget(self, key: K) -> None:
        """Drop a pending key and its backoff (its object is gone)."""
        with self._cond:
            self._due.pop(key, None)
            self._again.pop(key, None)
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
