"""Pods by a label selector, as a kubelet's informer sees them: list, then watch from the list's
resourceVersion, and on any error (the API server restarting, a 410 Gone) list again."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
PodHandler = Callable[[dict[str, Any]], None]


class PodWatch:
    """Calls `on_pod` for every pod listed, added or modified and `on_deleted` for every pod
    deleted, one event at a time, on a thread of its own; after each listing, `on_listed` with
    every pod listed (to forget those deleted while nobody watched)."""

    def __init__(
        self,
        core: client.CoreV1Api,
        selector: str,
        on_pod: PodHandler,
        on_deleted: PodHandler,
        name: str,
        on_listed: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._core, self._selector = core, selector
        self._on_pod, self._on_deleted, self._on_listed = on_pod, on_deleted, on_listed
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with suppress(Exception):
                response.shutdown()  # ends a watch blocked on its next line
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch(self._list())
            except Exception as e:
                if not self._stop.is_set():
                    log.warning("%s: watch failed, listing again: %s", self._thread.name, e)
                    self._stop.wait(0.5)

    def _list(self) -> str:
        listing = self._core.list_pod_for_all_namespaces(
            label_selector=self._selector, _preload_content=False
        )
        body = json.loads(listing.data)
        for pod in body["items"]:
            self._on_pod(pod)
        if self._on_listed is not None:
            self._on_listed(body["items"])
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> None:
        self._response = self._core.list_pod_for_all_namespaces(
            label_selector=self._selector,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
        )
        try:
            for line in iter_resp_lines(self._response):
                if self._stop.is_set():
                    return
                event = json.loads(line)
                kind, pod = event["type"], event["object"]
                if kind == "ERROR":
                    raise RuntimeError(f"watch error: {pod.get('message')}")
                if kind in ("ADDED", "MODIFIED"):
                    self._on_pod(pod)
                elif kind == "DELETED":
                    self._on_deleted(pod)
        finally:
            self._response.release_conn()
            self._response = None
