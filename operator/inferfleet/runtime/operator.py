"""The operator's runtime: everything one operator process keeps, created once at startup.

kopf's memo carries this object only. Handlers, the reconciler and the autoscaler take what
they need from it; no module keeps mutable state of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inferfleet.runtime.answer import CachedAnswer
from inferfleet.runtime.config import OperatorConfig
from inferfleet.runtime.queue import Key, ReconcileQueue
from inferfleet.runtime.state import InventoryVersion, RefusedNodes, ServiceState, ServiceStates

DISCOVERY_TTL_SECONDS = 60.0
"""How long a discovery answer is kept: installing the API is noticed within a minute."""


class OperatorRuntime:
    def __init__(self, config: OperatorConfig, api: Any = None) -> None:
        self.config = config
        self.api = api
        """The one Kubernetes API client (kube/connection.py ThrottledApiClient)."""
        self.states = ServiceStates()
        self.refused_nodes = RefusedNodes(config.refused_node_hold_seconds)
        self.inventory = InventoryVersion()
        self.queue = ReconcileQueue(config.workers, gone=self.forget)
        self.provisioning_served = CachedAnswer(DISCOVERY_TTL_SECONDS)
        """Whether the API server serves ProvisioningRequests (one discovery GET a minute at most,
        not one per reconcile of every group waiting for nodes)."""
        self.inference_pools_served = CachedAnswer(DISCOVERY_TTL_SECONDS)
        """Whether it serves InferencePools (planning/inference_pool.py), asked the same way."""
        self._forget_hooks: list[Callable[[Key], None]] = []
        self._cleanups: list[Callable[[], None]] = []

    def state(self, key: Key, uid: str) -> ServiceState:
        return self.states.get(key, uid)

    def on_forget(self, hook: Callable[[Key], None]) -> None:
        """Run `hook` when a service is gone (its metric series, the autoscaler's query in flight)."""
        self._forget_hooks.append(hook)

    def on_stop(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def forget(self, key: Key) -> None:
        """The service is gone: nothing of it stays in this process."""
        self.queue.forget(key)
        self.states.forget(key)
        for hook in self._forget_hooks:
            hook(key)

    def stop(self) -> None:
        """Stop the workers, then what was started after them, in reverse order (call once)."""
        self.queue.stop()
        for cleanup in reversed(self._cleanups):
            cleanup()
        self._cleanups.clear()
