"""Worker threads that reconcile the InferenceServices named by watch events, through a WorkQueue."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.handlers.logs import service_logger
from inferfleet.handlers.workqueue import WorkQueue

log = logging.getLogger(__name__)

Reconcile = Callable[[Any, Any, ClusterView, Any, str], None]


class ReconcileQueue:
    def __init__(self, api: Any, view: ClusterView, reconcile: Reconcile, workers: int) -> None:
        self._api, self._view, self._reconcile = api, view, reconcile
        self._queue: WorkQueue[Key] = WorkQueue()
        self._triggers: dict[Key, str] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True) for i in range(workers)
        ]

    def enqueue(self, key: Key, trigger: str) -> None:
        with self._lock:
            self._triggers.setdefault(key, trigger)  # the first reason since the last run names it
        self._queue.add(key)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.close()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _work(self) -> None:
        while (key := self._queue.get()) is not None:
            with self._lock:
                trigger = self._triggers.pop(key, "event")
            failed = False
            snapshot = self._view.service(key)
            try:
                if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
                    self._queue.forget(key)
                else:
                    self._reconcile(self._api, snapshot, self._view, service_logger(snapshot), trigger)
            except Exception as e:
                failed = True
                with self._lock:
                    self._triggers.setdefault(key, "retry")
                retries = self._queue.failures(key)
                log.warning(f"reconciling {key[0]}/{key[1]} ({trigger}) failed, retry #{retries + 1}: {e}")
            finally:
                self._queue.done(key, failed=failed)
