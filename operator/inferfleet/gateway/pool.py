"""One service's processing slots and its FIFO queue, in the gateway's event loop.

Each ready endpoint has `slots_per_replica` slots. A request takes a slot on the endpoint with the
fewest outstanding requests; when every slot is taken it waits in a bounded FIFO queue and is
handed the next slot that frees (or appears, when a replica becomes ready). A waiter that gives up
(timeout, client gone) leaves the queue; a slot handed to a waiter that gave up at that instant is
given back. Endpoints that leave (drained, dead) keep their count until their last request ends,
but get nothing new.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inferfleet.gateway.prefix_index import PrefixIndex
from inferfleet.planning.prefix_routing import LoadBound, pick_endpoint_by_match
from inferfleet.planning.routing import (
    RouteError,
    ServiceRoute,
    compute_retry_backoff,
    pick_endpoint,
    queue_full,
)

SlotListener = Callable[[str, int], None]
"""Told (endpoint, requests in flight there) whenever that count changes."""


@dataclass
class _Waiter:
    future: asyncio.Future[str]
    exclude: frozenset[str]
    blocks: tuple[int, ...]


@dataclass
class ServicePool:
    route: ServiceRoute
    endpoints: tuple[str, ...] = ()
    on_in_flight: SlotListener = lambda endpoint, n: None
    on_queue: Callable[[int], None] = lambda n: None
    load_bound: LoadBound | None = None
    """Prefix affinity (planning/prefix_routing.py) within this bound; None routes by least load
    alone."""
    prefix_index: PrefixIndex = field(default_factory=PrefixIndex)
    clock: Callable[[], float] = time.monotonic
    in_flight: dict[str, int] = field(default_factory=dict)
    _failing: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Endpoints whose last try could not connect or broke: (avoided until, failures in a row).
    A replica that is Ready but not listening, or just died, gets no new request for a moment
    (compute_retry_backoff of its failures in a row) instead of drawing every least-load pick."""
    _waiters: deque[_Waiter] = field(default_factory=deque)
    _turn: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def set_route(self, route: ServiceRoute) -> None:
        self.route = route
        self._hand_over()
        self._notify()

    def set_endpoints(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = endpoints
        self._failing = {e: f for e, f in self._failing.items() if e in endpoints}
        self._hand_over()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def changed(self) -> asyncio.Event:
        """Set at the next change of route or endpoints (take it before waiting: each change
        sets this event and makes a new one)."""
        return self._changed

    @property
    def prefix_affinity(self) -> bool:
        return self.load_bound is not None

    def try_acquire(self, exclude: frozenset[str] = frozenset(), blocks: tuple[int, ...] = ()) -> str | None:
        if self._waiters:  # FIFO: nobody overtakes a waiting request
            return None
        return self._take(exclude, blocks)

    def report_failure(self, endpoint: str) -> None:
        """A try on `endpoint` could not connect or broke before an answer."""
        failures = self._failing.get(endpoint, (0.0, 0))[1] + 1
        self._failing[endpoint] = (self.clock() + compute_retry_backoff(failures), failures)

    def report_success(self, endpoint: str) -> None:
        self._failing.pop(endpoint, None)

    def _avoided(self, exclude: frozenset[str]) -> frozenset[str]:
        """`exclude` and the endpoints failing now, unless that leaves nothing to try."""
        now = self.clock()
        failing = {e for e, (until, _) in self._failing.items() if until > now}
        if failing and any(e not in exclude and e not in failing for e in self.endpoints):
            return exclude | failing
        return exclude

    def _take(self, exclude: frozenset[str], blocks: tuple[int, ...] = ()) -> str | None:
        counts = {e: self.in_flight.get(e, 0) for e in self.endpoints}
        if exclude and all(e in exclude for e in counts):
            exclude = frozenset()  # nowhere else to go: the excluded endpoint beats none
        exclude = self._avoided(exclude)
        slots, endpoint = self.route.slots_per_replica, None
        if blocks and self.load_bound is not None:
            match = self.prefix_index.match(blocks, [e for e in counts if e not in exclude])
            endpoint = pick_endpoint_by_match(
                counts, slots, exclude, blocks, match.held, match.shared, self.load_bound
            )
        if endpoint is None:
            endpoint = pick_endpoint(counts, slots, exclude, self._turn)
            self._turn += 1  # least load's own turn: prefix picks between must not fix its choice
        if endpoint is not None:
            self._count(endpoint, +1)
            if blocks and self.load_bound is not None:
                self.prefix_index.record(blocks, endpoint)
        return endpoint

    def enqueue(
        self, exclude: frozenset[str] = frozenset(), blocks: tuple[int, ...] = ()
    ) -> asyncio.Future[str] | RouteError:
        """A place in the queue, or the 429 of a full queue."""
        if len(self._waiters) >= self.route.max_queued:
            return queue_full(self.route)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(future, exclude, blocks))
        self.on_queue(len(self._waiters))
        return future

    def leave(self, future: asyncio.Future[str]) -> None:
        """A waiter gives up: out of the queue, and a slot it was just handed goes back."""
        self._waiters = deque(w for w in self._waiters if w.future is not future)
        self.on_queue(len(self._waiters))
        if future.done() and not future.cancelled():
            self.release(future.result())
        elif not future.done():
            future.cancel()

    def release(self, endpoint: str) -> None:
        self._count(endpoint, -1)
        self._hand_over()

    def _count(self, endpoint: str, delta: int) -> None:
        n = self.in_flight.get(endpoint, 0) + delta
        if n > 0 or endpoint in self.endpoints:
            self.in_flight[endpoint] = n
        else:
            self.in_flight.pop(endpoint, None)
        self.on_in_flight(endpoint, n)

    def _hand_over(self) -> None:
        handed = False
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.future.done():
                self._waiters.popleft()
                continue
            endpoint = self._take(waiter.exclude, waiter.blocks)
            if endpoint is None:
                break
            self._waiters.popleft()
            waiter.future.set_result(endpoint)
            handed = True
        if handed:
            self.on_queue(len(self._waiters))
