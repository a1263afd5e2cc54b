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

Reconcile = Callable[[Any, Any, ClusterView, Any, str], float | None]
"""Returns seconds after which to reconcile the service again though no event comes, or None."""
RefreshStatus = Callable[[Any, Any, ClusterView, Any], None]
Gone = Callable[[Key], None]
"""Drops what the process keeps of a service that no longer exists."""

STATUS_ONLY = "status"
"""The trigger of a child's status change: write the service's status, apply nothing. Any other
trigger queued for the same service replaces it (a full reconcile writes status too)."""


class ReconcileQueue:
    def __init__(
        self,
        api: Any,
        view: ClusterView,
        reconcile: Reconcile,
        refresh_status: RefreshStatus,
        workers: int,
        gone: Gone | None = None,
    ) -> None:
        self._api, self._view, self._reconcile, self._refresh = api, view, reconcile, refresh_status
        self._gone = gone
        self._queue: WorkQueue[Key] = WorkQueue()
        self._triggers: dict[Key, str] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True) for i in range(workers)
        ]

    def enqueue(self, key: Key, trigger: str, delay: float = 0.0) -> None:
        self._note(key, trigger)
        self._queue.add(key, delay=delay)

    def _note(self, key: Key, trigger: str) -> None:
        with self._lock:
            # The first reason since the last run names it, unless that asked for status only.
            if self._triggers.get(key, STATUS_ONLY) == STATUS_ONLY:
                self._triggers[key] = trigger

    def forget(self, key: Key) -> None:
        """The service is gone: drop its pending work."""
        with self._lock:
            self._triggers.pop(key, None)
        self._queue.forget(key)

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
            failed, again = False, None
            snapshot = self._view.service(key)
            try:
                if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
                    self._queue.forget(key)
                elif trigger == STATUS_ONLY:
                    self._refresh(self._api, snapshot, self._view, service_logger(snapshot))
                else:
                    logger = service_logger(snapshot)
                    again = self._reconcile(self._api, snapshot, self._view, logger, trigger)
            except Exception as e:
                failed = True
                self._note(key, "retry")
                retries = self._queue.failures(key)
                log.warning(f"reconciling {key[0]}/{key[1]} ({trigger}) failed, retry #{retries + 1}: {e}")
            finally:
                self._queue.done(key, failed=failed)
            if self._view.service(key) is None:
                # Deleted while it was reconciled: what the reconcile recorded goes too.
                self.forget(key)
                if self._gone is not None:
                    self._gone(key)
            elif again is not None:
                self.enqueue(key, "recheck", delay=again)
