"""The operator's configuration, built once from the command line and never changed after.

Each setting's default is defined once, here; `inferfleet run`'s flags and the chart's values
map onto these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inferfleet.planning.inference_pool import EndpointPicker
from inferfleet.planning.policy import TenantPolicy
from inferfleet.planning.weights_jobs import CacheSettings


@dataclass(frozen=True)
class PrometheusConfig:
    """Where the autoscaler reads engine metrics, and how it may use that access."""

    url: str | None = None
    ca_file: str | None = None
    """PEM CA bundle that verifies Prometheus' TLS certificate (default: the system's CAs)."""
    insecure_skip_verify: bool = False
    bearer_token_file: str | None = None
    """A Secret's key mounted as a file; read again for every query, so a rotated token is used."""
    username_file: str | None = None
    password_file: str | None = None
    timeout_seconds: float = 10.0
    """Server-side `timeout` of every query, and the client's deadline."""
    max_series: int = 10000
    """A result with more series is refused: a query may not cost the operator unbounded memory."""
    custom_queries: bool = False
    """Whether spec.scaling.query is honoured (each runs confined to its service's namespace)."""


@dataclass(frozen=True)
class ClientLimits:
    """How hard the operator's Kubernetes client may press the API server (see kube/connection.py)."""

    qps: float = 50.0
    burst: int = 100
    concurrency: int = 8
    """Requests in flight at most."""
    retries_on_429: int = 8
    max_retry_after_seconds: float = 10.0


@dataclass(frozen=True)
class PeeringConfig:
    """Leader election between replicas through kopf's peering object."""

    name: str
    identity: str
    """This instance's record in the peering object (kopf's POD_ID)."""
    priority: int = 0
    namespace: str | None = None
    """None: a ClusterKopfPeering (cluster-wide operator); else the KopfPeering in that namespace."""


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty: every namespace."""
    workers: int = 8
    """Threads running reconciles (and kopf's synchronous handlers)."""
    scheduler_name: str | None = None
    gateway_url: str | None = None
    """Base URL of inferfleet's gateway serving these namespaces; status.endpoint points through it."""
    autoscale_interval_seconds: float = 15.0
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    peering: PeeringConfig | None = None
    """None: standalone, this instance always works."""
    peering_lifetime_seconds: int = 15
    """A standby takes over once the active instance's peering record is this old (kill -9 leaves it)."""
    refused_node_hold_seconds: float = 300.0
    """How long new placements avoid a node where the scheduler refused a planned group member."""
    inference_pools: bool = True
    """Emit an InferencePool per service where the cluster serves the Gateway API Inference
    Extension's API (handlers/inference_pools.py); False: never."""
    endpoint_picker: EndpointPicker = field(default_factory=EndpointPicker)
    """The endpoint picker each InferencePool names."""
    model_cache: CacheSettings | None = None
    """The node weights cache (root, the image of its Jobs, the operator's namespace); None: off,
    every engine pod downloads its weights into its own emptyDir."""
