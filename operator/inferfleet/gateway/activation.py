"""Scale from zero: a request for a service at zero replicas asks for one, once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.planning.routing import ServiceRoute

log = logging.getLogger("inferfleet.gateway")

ASK_AGAIN_SECONDS = 5.0
"""While a service still shows zero replicas, ask again after this long (the watch may lag)."""

ScaleFromZero = Callable[[str, str], bool]
"""(namespace, name) -> whether replicas went from 0 to 1 (blocking IO, run in a thread)."""


@dataclass
class Activator:
    scale_from_zero: ScaleFromZero
    metrics: GatewayMetrics
    _asked: dict[tuple[str, str], float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __call__(self, route: ServiceRoute) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._asked.get(route.key, float("-inf")) < ASK_AGAIN_SECONDS:
            return
        self._asked[route.key] = loop.time()
        task = loop.create_task(self._ask(route))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, route: ServiceRoute) -> None:
        try:
            raised = await asyncio.to_thread(self.scale_from_zero, route.namespace, route.name)
        except Exception as e:
            log.warning("could not scale %s/%s from zero: %s", route.namespace, route.name, e)
            return
        if raised:
            self.metrics.activations.labels(*route.key).inc()
            log.info("scaled %s/%s from zero to one replica for a waiting request", *route.key)
