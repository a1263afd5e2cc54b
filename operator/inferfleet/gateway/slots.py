"""Taking a slot for one request: at once, after a wait in the queue, or after a scale from zero."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from inferfleet.gateway.pool import ServicePool
from inferfleet.planning.routing import RouteError, ServiceRoute, plan_wait, waited_too_long


class RefusedError(Exception):
    """The request is answered with `error` instead of reaching an engine."""

    def __init__(self, error: RouteError) -> None:
        super().__init__(error.message)
        self.error = error


Activate = Callable[[ServiceRoute], None]


async def take_slot(
    pool: ServicePool,
    activate: Activate,
    started: float,
    exclude: frozenset[str] = frozenset(),
    blocks: tuple[int, ...] = (),
) -> str:
    """An endpoint with a slot held for this request, or RefusedError (queue full, timeout, not serving).

    `started` (the loop's clock) is when the request arrived: time already spent waiting counts.
    """
    endpoint = pool.try_acquire(exclude, blocks)
    if endpoint is not None:
        return endpoint
    plan = plan_wait(pool.route, len(pool.endpoints))
    if plan.refuse is not None:
        raise RefusedError(plan.refuse)
    if plan.activate:
        activate(pool.route)
    waiting = pool.enqueue(exclude, blocks)
    if isinstance(waiting, RouteError):
        raise RefusedError(waiting)
    try:
        return await _wait(pool, waiting, activate, started + plan.timeout, started)
    except BaseException:
        pool.leave(waiting)
        raise


async def _wait(
    pool: ServicePool, waiting: asyncio.Future[str], activate: Activate, deadline: float, started: float
) -> str:
    loop = asyncio.get_running_loop()
    while not waiting.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise RefusedError(
                waited_too_long(pool.route, loop.time() - started, starting=not pool.endpoints)
            )
        changed: asyncio.Future[bool] = asyncio.ensure_future(pool.changed().wait())
        try:
            pending: set[asyncio.Future[Any]] = {waiting, changed}
            await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if waiting.done():
            break
        replan = plan_wait(pool.route, len(pool.endpoints))
        if replan.refuse is not None:
            raise RefusedError(replan.refuse)
        if replan.activate:
            activate(pool.route)
    return waiting.result()
