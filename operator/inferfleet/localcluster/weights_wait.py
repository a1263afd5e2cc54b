"""The kubelet's part for an engine pod's `wait-for-weights` init container on the local cluster.

On a GPU node that init container (planning/children.py) looks every 2 s in the namespace's cache
volume, under the model's directory (its mount's subPath), for the ref file a finished fetch
publishes (its argument), and the pod's containers start only once it is there: the engine, and
with it the kubelet's readiness probes. KWOK runs no container and reports init containers done at
once. Where PodEngines plays the kubelet's probes (probed namespaces), WeightsWait holds such a pod
instead until the node holds the model as the API shows it: a fetch Job of that namespace and
source on that node has completed (and no eviction Job completed after it), which is when
`fetch-model` published the ref. LocalCluster.fetch_seconds sets how long KWOK takes to complete a
fetch's pod. What differs from a kubelet: the pod's status keeps KWOK's word (init container
terminated, phase Running) while it is held; only its engine and its readiness wait.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client

from inferfleet.api.status import WeightsState
from inferfleet.planning.weights_naming import (
    CACHE_LABEL,
    WAIT_CONTAINER,
    WEIGHTS_MOUNT,
    WEIGHTS_VOLUME,
    compute_cache_key,
    compute_ref_file,
)
from inferfleet.planning.weights_observed import build_observed_fetch

log = logging.getLogger(__name__)

WeightsKey = tuple[str, str, str, str]
"""What a wait container waits for: (namespace, node, the model's cache directory, its ref file)."""
FETCH_SELECTOR = f"{CACHE_LABEL}=fetch"
POLL_SECONDS = 1.0
"""How often the Jobs are read while a pod waits (the wait container itself looks every 2 s)."""


def build_wait_key(pod: Mapping[str, Any]) -> WeightsKey | None:
    """What the pod's `wait-for-weights` init container waits for; None without one or unbound."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    wait = next((c for c in spec.get("initContainers") or [] if c.get("name") == WAIT_CONTAINER), None)
    if wait is None or not node:
        return None
    mounts = wait.get("volumeMounts") or []
    directory = next((m.get("subPath") for m in mounts if m.get("name") == WEIGHTS_VOLUME), None)
    command = [*(wait.get("command") or []), *(wait.get("args") or [])]
    at = command.index(WEIGHTS_MOUNT) if WEIGHTS_MOUNT in command[:-1] else None
    if not directory or at is None:
        return None
    return (str(pod["metadata"]["namespace"]), str(node), str(directory), str(command[at + 1]))


def compute_present(jobs: Iterable[Mapping[str, Any]]) -> frozenset[WeightsKey]:
    """The copies the nodes hold: the last completed fetch or eviction Job of each decides."""
    last: dict[WeightsKey, tuple[str, bool]] = {}
    for job in jobs:
        observed = build_observed_fetch(job)
        if observed is None or observed.state != WeightsState.PRESENT or observed.completed is None:
            continue
        namespace = str(job["metadata"]["namespace"])
        source = observed.source
        key = (namespace, observed.node, compute_cache_key(source), compute_ref_file(source))
        # In one second (the API's grain) a fetch after an eviction is the likelier order.
        last[key] = max(last.get(key, ("", False)), (observed.completed, not observed.evict))
    return frozenset(key for key, (_, fetched) in last.items() if fetched)


class WeightsWait:
    """Holds pods whose wait container waits for weights; hands each back once, when they are there."""

    def __init__(self, batch: client.BatchV1Api, on_release: Callable[[dict[str, Any]], None]) -> None:
        self._batch = batch
        self._on_release = on_release
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[WeightsKey, dict[str, Any]]] = {}  # by pod uid
        self._released: set[str] = set()
        self._present: frozenset[WeightsKey] = frozenset()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="weights-wait", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def hold(self, pod: dict[str, Any]) -> bool:
        """Whether the pod waits for weights now (its latest state is kept for its release). A pod
        released once is never held again: a kubelet runs init containers once."""
        uid = pod["metadata"]["uid"]
        key = build_wait_key(pod)
        with self._lock:
            if key is None or uid in self._released:
                return False
            self._waiting[uid] = (key, pod)
        self._wake.set()
        return True

    def forget(self, uid: str) -> None:
        with self._lock:
            self._waiting.pop(uid, None)
            self._released.discard(uid)

    def retain(self, uids: set[str]) -> None:
        """Forget every pod not in `uids` (after a fresh listing)."""
        with self._lock:
            self._waiting = {u: w for u, w in self._waiting.items() if u in uids}
            self._released &= uids

    def waiting_for(self, namespace: str, pod: str) -> WeightsKey | None:
        with self._lock:
            waiting = list(self._waiting.values())
        return next((k for k, p in waiting if (k[0], p["metadata"]["name"]) == (namespace, pod)), None)

    def present(self) -> frozenset[WeightsKey]:
        """The nodes' copies as last read (read only while some pod waits)."""
        with self._lock:
            return self._present

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                idle = not self._waiting
            if not idle:
                try:
                    self._poll()
                except Exception as e:  # the API server restarting: read again next time
                    log.warning("weights wait: reading fetch Jobs failed: %s", e)
            self._wake.wait(None if idle else POLL_SECONDS)

    def _poll(self) -> None:
        jobs = self._batch.list_job_for_all_namespaces(label_selector=FETCH_SELECTOR, _preload_content=False)
        present = compute_present(_items(jobs))
        with self._lock:
            self._present = present
            ready = [uid for uid, (key, _) in self._waiting.items() if key in present]
            released = [self._waiting.pop(uid)[1] for uid in ready]
            self._released.update(ready)
        for pod in released:
            log.info("pod %s/%s: weights on its node", pod["metadata"]["namespace"], pod["metadata"]["name"])
            self._on_release(pod)


def _items(response: Any) -> list[dict[str, Any]]:
    return list(json.loads(response.data)["items"])
