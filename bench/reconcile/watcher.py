"""The bench's own watches: when each service's Deployment first appeared and when it first became Ready.

Timestamps are this machine's wall clock at the moment the watch event was received (ms
precision). A watch that ends is resumed from its last resourceVersion (a 410 Gone relists,
which can only make a first-seen time later, never earlier).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.planning.names import SERVICE_LABEL

Key = tuple[str, str]
WATCH_SECONDS = 30


def is_ready(obj: dict[str, Any]) -> bool:
    """Phase Ready for the current spec: status.observedGeneration == metadata.generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return status.get("phase") == "Ready" and status.get("observedGeneration") == generation


def has_condition(obj: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ for c in (obj.get("status") or {}).get("conditions") or [])


class FleetWatcher:
    def __init__(self, kubeconfig: Path) -> None:
        self._kubeconfig = kubeconfig
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.children_applied: dict[Key, float] = {}
        self.ready: dict[Key, float] = {}
        self.services: dict[Key, dict[str, Any]] = {}
        """The newest version of every InferenceService seen."""
        self._threads = [
            threading.Thread(target=self._run, args=(stream,), name=stream.__name__, daemon=True)
            for stream in (self._watch_services, self._watch_deployments)
        ]
        self.errors: list[str] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)  # daemon threads: one blocked in a read ends with the process

    def _run(self, stream: Callable[[client.ApiClient, str], str]) -> None:
        api = config.new_client_from_config(config_file=str(self._kubeconfig))
        resource_version = ""
        while not self._stop.is_set():
            try:
                resource_version = stream(api, resource_version)
            except ApiException as e:
                if e.status == 410:
                    resource_version = ""  # too old: relist
                else:
                    self.errors.append(f"{e.status} {e.reason}")
                    time.sleep(1)
            except Exception as e:  # connection reset and the like: resume
                self.errors.append(repr(e))
                time.sleep(1)

    def _stream(self, list_call: Callable[..., Any], resource_version: str, **kwargs: Any) -> Any:
        """Events with plain-dict objects (an expired resourceVersion raises ApiException 410)."""
        return watch.Watch().stream(
            list_call,
            resource_version=resource_version or None,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
            deserialize=False,
            _request_timeout=WATCH_SECONDS + 10,
            **kwargs,
        )

    def _watch_services(self, api: client.ApiClient, resource_version: str) -> str:
        custom = client.CustomObjectsApi(api)
        for event in self._stream(custom.list_cluster_custom_object, resource_version, group=GROUP,
                                  version=VERSION, plural=PLURAL):  # fmt: skip
            seen = time.time()
            obj = event["object"]
            resource_version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                with self._lock:
                    if event["type"] == "DELETED":
                        self.services.pop(key, None)
                    else:
                        self.services[key] = obj
                        if is_ready(obj):
                            self.ready.setdefault(key, seen)
            if self._stop.is_set():
                break
        return resource_version

    def _watch_deployments(self, api: client.ApiClient, resource_version: str) -> str:
        apps = client.AppsV1Api(api)
        for event in self._stream(apps.list_deployment_for_all_namespaces, resource_version,
                                  label_selector=SERVICE_LABEL):  # fmt: skip
            seen = time.time()
            meta = event["object"]["metadata"]
            resource_version = meta["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                key = (meta["namespace"], meta["labels"][SERVICE_LABEL])
                with self._lock:
                    self.children_applied.setdefault(key, seen)
            if self._stop.is_set():
                break
        return resource_version

    def count_ready(self, keys: Iterable[Key]) -> int:
        with self._lock:
            return sum(1 for k in keys if k in self.ready)

    def count_with_condition(self, keys: Iterable[Key], type_: str) -> int:
        with self._lock:
            return sum(1 for k in keys if k in self.services and has_condition(self.services[k], type_))
