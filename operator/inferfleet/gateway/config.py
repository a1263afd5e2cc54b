"""`inferfleet gateway`'s configuration: each default defined once, importable without a client."""

from __future__ import annotations

from dataclasses import dataclass

from inferfleet.planning.prefix_routing import LoadBound


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8081
    namespaces: tuple[str, ...] = ()
    """Served namespaces (globs allowed); empty: all."""
    max_attempts: int = 3
    retry_budget: float = 0.2
    """Retries allowed as a fraction of recent requests (plus a few per window)."""
    connect_timeout_seconds: float = 5.0
    shutdown_seconds: float = 60.0
    """On SIGTERM, time the requests in flight get to finish."""
    static_endpoints: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(model, engine host:port...) served without a cluster: development and benchmarks only."""
    static_slots: int = 256
    routing: str = "least-load"
    """least-load, or prefix-affinity: requests sharing their leading prompt blocks go to one
    replica (its prefix cache) while its load stays within the bound."""
    prefix_load_bound: float = 1.0
    """Prefix affinity skips a replica above (1 + this) x the mean load ..."""
    prefix_load_slack: int = 4
    """... and above the mean plus this many requests (planning/prefix_routing.py LoadBound)."""
    workers: int = 1
    """Gateway processes sharing the API port (gateway/workers.py); more than one when the pod
    has more than one CPU."""
    worker_timeout_seconds: float = 30.0
    """With workers: one that serves but has not said so for this long (its loop is stuck) is
    killed and started again."""

    @property
    def prefix_load(self) -> LoadBound:
        return LoadBound(self.prefix_load_bound, self.prefix_load_slack)
