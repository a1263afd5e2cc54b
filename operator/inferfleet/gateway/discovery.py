"""List-then-watch of InferenceServices and EndpointSlices, posted to the gateway's event loop.

Each watch runs in a thread with the official client: a full listing (which replaces what was
known in its scope), then a watch from the listing's resourceVersion until the server ends it or
it fails, then a new listing. Namespaces given by name get a watch each (the chart can then grant
Roles in those namespaces only); no namespace or a glob means one cluster-wide watch, filtered.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.gateway.registry import Registry

log = logging.getLogger("inferfleet.gateway")

WATCH_SECONDS = 240
RELIST_BACKOFF_SECONDS = 1.0
ENDPOINTSLICE_SELECTOR = "kubernetes.io/service-name"


def _namespace_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace", ""))


@dataclass
class _Watch:
    """One resource kind in one scope (a namespace, or the whole cluster with a filter)."""

    what: str
    list_call: Callable[..., Any]
    args: tuple[Any, ...]
    namespace: str | None
    keep: Callable[[str], bool]
    on_sync: Callable[[list[Mapping[str, Any]], str | None], None]
    on_event: Callable[[str, Mapping[str, Any]], None]


@dataclass
class Discovery:
    registry: Registry
    api: client.ApiClient
    namespaces: Sequence[str] = ()
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _pending: set[str] = field(default_factory=set)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        watches = self._watches()
        self._pending = {w.what + str(w.namespace) for w in watches}
        for w in watches:
            name = f"watch-{w.what}-{w.namespace or 'all'}"
            threading.Thread(target=self._run, args=(w, loop), name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watches(self) -> list[_Watch]:
        custom, discovery = client.CustomObjectsApi(self.api), client.DiscoveryV1Api(self.api)
        exact = bool(self.namespaces) and not any(set(n) & set("*?[") for n in self.namespaces)
        scopes: list[str | None] = list(self.namespaces) if exact else [None]
        patterns = list(self.namespaces)

        def keep(ns: str) -> bool:
            return not patterns or any(fnmatch.fnmatchcase(ns, p) for p in patterns)

        watches = []
        for ns in scopes:
            services: tuple[Callable[..., Any], tuple[str, ...]]
            slices: tuple[Callable[..., Any], tuple[str, ...]]
            if ns is None:
                services = (custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL))
                slices = (discovery.list_endpoint_slice_for_all_namespaces, ())
            else:
                services = (custom.list_namespaced_custom_object, (GROUP, VERSION, ns, PLURAL))
                slices = (discovery.list_namespaced_endpoint_slice, (ns,))
            reg = self.registry
            watches.append(
                _Watch("services", services[0], services[1], ns, keep, reg.sync_services, self._service_event)
            )
            watches.append(
                _Watch("endpointslices", slices[0], slices[1], ns, keep, reg.sync_slices, self._slice_event)
            )
        return watches

    def _service_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            meta = obj.get("metadata") or {}
            self.registry.delete_service((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        else:
            self.registry.upsert_service(obj)

    def _slice_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            self.registry.delete_slice(obj)
        else:
            self.registry.upsert_slice(obj)

    def _run(self, w: _Watch, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                self._list_and_watch(w, loop)
            except Exception as e:  # the API server restarted, a 410, a dropped connection: list again
                why = " ".join(str(e).split())  # one line: an ApiException's text spans several
                log.warning("watch of %s (%s) failed, listing again: %s", w.what, w.namespace or "all", why)
                self._stop.wait(RELIST_BACKOFF_SECONDS)

    def _list_and_watch(self, w: _Watch, loop: asyncio.AbstractEventLoop) -> None:
        kwargs: dict[str, Any] = (
            {"label_selector": ENDPOINTSLICE_SELECTOR} if w.what == "endpointslices" else {}
        )
        raw = w.list_call(*w.args, _preload_content=False, **kwargs)
        listing = json.loads(raw.data)
        items = [o for o in listing.get("items") or [] if w.keep(_namespace_of(o))]
        loop.call_soon_threadsafe(self._synced, w, items)
        stream = watch.Watch().stream(
            w.list_call,
            *w.args,
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=WATCH_SECONDS,
            **kwargs,
        )
        for event in stream:
            if self._stop.is_set():
                return
            kind, obj = event.get("type"), event.get("raw_object") or {}
            if kind == "ERROR":
                raise RuntimeError(f"watch error: {obj.get('message', obj)}")
            if kind in ("ADDED", "MODIFIED", "DELETED") and w.keep(_namespace_of(obj)):
                loop.call_soon_threadsafe(w.on_event, kind, obj)

    def _synced(self, w: _Watch, items: list[Mapping[str, Any]]) -> None:
        w.on_sync(items, w.namespace)
        self._pending.discard(w.what + str(w.namespace))
        if not self._pending:
            self.synced.set()
