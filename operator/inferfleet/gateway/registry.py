"""What the gateway knows of the cluster: a ServicePool per InferenceService, fed by watches.

Watch events arrive in any order (an EndpointSlice before its InferenceService, say), so slices
are kept by Service name whether or not the InferenceService is known yet. Everything here runs
on the gateway's event loop; the watch threads post to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.gateway.pool import ServicePool
from inferfleet.planning.prefix_routing import LoadBound
from inferfleet.planning.routing import ServiceRoute, build_endpoints, build_service_route, service_of_slice

Key = tuple[str, str]


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


@dataclass
class Registry:
    metrics: GatewayMetrics
    load_bound: LoadBound | None = None
    """Prefix-affinity routing's load bound for every pool; None: least load alone."""
    pools: dict[Key, ServicePool] = field(default_factory=dict)
    _slices: dict[Key, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def routes(self) -> list[ServiceRoute]:
        return [p.route for p in self.pools.values()]

    def upsert_service(self, obj: Mapping[str, Any]) -> None:
        route = build_service_route(obj)
        if route is None:
            self.delete_service(_key(obj))
            return
        pool = self.pools.get(route.key)
        if pool is None:
            self.pools[route.key] = self._new_pool(route)
        else:
            pool.set_route(route)

    def add_static(self, route: ServiceRoute, endpoints: tuple[str, ...]) -> None:
        self._slices[route.key] = {"static": endpoints}
        self.pools[route.key] = self._new_pool(route)

    def _new_pool(self, route: ServiceRoute) -> ServicePool:
        key = route.key
        self.metrics.serve(*key)
        queued = self.metrics.queued.labels(*key)
        return ServicePool(
            route,
            self._endpoints(key),
            on_in_flight=lambda endpoint, n: self._in_flight(key, endpoint, n),
            on_queue=queued.set,
            load_bound=self.load_bound,
        )

    def _in_flight(self, key: Key, endpoint: str, n: int) -> None:
        pool = self.pools.get(key)
        if n <= 0 and (pool is None or endpoint not in pool.endpoints):
            self.metrics.forget_endpoint(*key, endpoint)  # gone and idle: no series left behind
        else:
            self.metrics.serve(*key, endpoint)
            self.metrics.in_flight.labels(*key, endpoint).set(n)

    def delete_service(self, key: Key) -> None:
        pool = self.pools.pop(key, None)
        if pool is None:
            return
        # Its waiters are told at once instead of waiting out their timeout.
        pool.set_route(replace(pool.route, blocked="the InferenceService was deleted"))
        pool.set_endpoints(())
        self.metrics.forget(*key, list(pool.in_flight))

    def sync_services(self, objs: Iterable[Mapping[str, Any]], namespace: str | None) -> None:
        """A full listing of `namespace` (None: every namespace) replaces what was known there."""
        seen = set()
        for obj in objs:
            self.upsert_service(obj)
            seen.add(_key(obj))
        for key in [k for k in self.pools if namespace in (None, k[0]) and k not in seen]:
            self.delete_service(key)

    def upsert_slice(self, obj: Mapping[str, Any]) -> None:
        service = service_of_slice(obj)
        if service is not None:
            self._slices.setdefault(service, {})[_key(obj)[1]] = build_endpoints([obj])
            self._refresh(service)

    def delete_slice(self, obj: Mapping[str, Any]) -> None:
        service = service_of_slice(obj)
        if service is not None and self._slices.get(service, {}).pop(_key(obj)[1], None) is not None:
            self._refresh(service)

    def sync_slices(self, objs: Iterable[Mapping[str, Any]], namespace: str | None) -> None:
        touched = {k for k in self._slices if namespace in (None, k[0])}
        for key in touched:
            self._slices[key] = {}
        for obj in objs:
            service = service_of_slice(obj)
            if service is not None:
                self._slices.setdefault(service, {})[_key(obj)[1]] = build_endpoints([obj])
                touched.add(service)
        for key in touched:
            self._refresh(key)

    def _endpoints(self, service: Key) -> tuple[str, ...]:
        return tuple(sorted({e for endpoints in self._slices.get(service, {}).values() for e in endpoints}))

    def _refresh(self, service: Key) -> None:
        pool = self.pools.get(service)
        if pool is not None:
            pool.set_endpoints(self._endpoints(service))
