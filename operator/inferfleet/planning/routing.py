"""The request path's decisions, pure: what a request may reach and where it goes.

The gateway (`inferfleet gateway`) keeps, per InferenceService, a `ServiceRoute` read from the
object and the engine endpoints read from its EndpointSlices; for each request it resolves the
service the request names, waits for a slot, picks the least-loaded endpoint, and decides whether
a failed try is tried again elsewhere. Every decision here takes what was observed and returns a
value; the gateway does the IO.

Addressing: `model` alone names a service when exactly one served namespace has it; a model name
served in two namespaces is refused as ambiguous, never picked. `/namespaces/{ns}/v1` narrows the
search to one namespace and `/namespaces/{ns}/services/{name}/v1` (what `status.endpoint` says)
names exactly one InferenceService.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferfleet.api import InferenceServiceSpec, ReadyReason

# A service whose Ready condition says one of these, for its current generation, will not get a
# replica by waiting: a request held for it is answered at once with the condition's message.
BLOCKING_REASONS = frozenset(
    {
        ReadyReason.NO_MATCHING_NODES,
        ReadyReason.UNKNOWN_GPU_MEMORY,
        ReadyReason.MODEL_DOES_NOT_FIT,
        ReadyReason.INSUFFICIENT_CAPACITY,
        ReadyReason.NODES_UNAVAILABLE,
        ReadyReason.INVALID_SPEC,
        ReadyReason.POLICY_VIOLATION,
        ReadyReason.ENGINE_NOT_MULTI_NODE,
        ReadyReason.NAME_CONFLICT,
        ReadyReason.POD_CREATION_FAILED,
    }
)
QUEUE_FULL_RETRY_AFTER = 1
QUEUE_TIMEOUT_RETRY_AFTER = 5
NOT_SERVING_RETRY_AFTER = 30
RETRYABLE_STATUSES = frozenset({502, 503})


@dataclass(frozen=True)
class RouteError:
    """An answer in OpenAI's error shape: HTTP status, error type and code, a message."""

    status: int
    type: str
    code: str
    message: str
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


def not_found(message: str) -> RouteError:
    return RouteError(404, "invalid_request_error", "model_not_found", message)


def bad_request(message: str, code: str = "invalid_request") -> RouteError:
    return RouteError(400, "invalid_request_error", code, message)


def unavailable(message: str, retry_after: int, code: str = "service_unavailable") -> RouteError:
    return RouteError(503, "service_unavailable", code, message, retry_after)


@dataclass(frozen=True)
class ServiceRoute:
    """What the gateway needs of one InferenceService."""

    namespace: str
    name: str
    model: str
    slots_per_replica: int = 256
    max_queued: int = 1000
    queue_timeout: float = 60.0
    replicas: int = 1
    may_activate: bool = False
    """Scaling is on with minReplicas 0: a request may raise replicas from zero."""
    activation_timeout: float = 300.0
    blocked: str | None = None
    """Why no replica will come by waiting (the Ready condition's message), or None."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def path(self) -> str:
        return f"/namespaces/{self.namespace}/services/{self.name}/v1"


def build_service_route(obj: Mapping[str, Any]) -> ServiceRoute | None:
    """The route of an InferenceService object; None when it names no model at all."""
    meta, raw_spec = obj.get("metadata") or {}, obj.get("spec") or {}
    model = (raw_spec.get("model") or {}).get("name")
    if not isinstance(model, str) or not model:
        return None
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    try:
        spec = InferenceServiceSpec.model_validate(raw_spec)
    except ValueError:
        return ServiceRoute(namespace, name, model, replicas=0, blocked=_blocking_message(obj) or "")
    scaling = spec.scaling
    return ServiceRoute(
        namespace=namespace,
        name=name,
        model=model,
        slots_per_replica=spec.engine.max_concurrent_requests,
        max_queued=spec.gateway.max_queued_requests,
        queue_timeout=float(spec.gateway.queue_timeout_seconds),
        replicas=spec.replicas,
        may_activate=scaling is not None and scaling.min_replicas == 0 and scaling.max_replicas > 0,
        activation_timeout=float(scaling.activation_timeout_seconds if scaling else 0),
        blocked=_blocking_message(obj),
    )


def _blocking_message(obj: Mapping[str, Any]) -> str | None:
    generation = (obj.get("metadata") or {}).get("generation")
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "Ready" or condition.get("status") != "False":
            continue
        current = condition.get("observedGeneration") in (None, generation)
        if current and condition.get("reason") in BLOCKING_REASONS:
            return f"{condition.get('reason')}: {condition.get('message') or ''}".strip()
    return None


def service_of_slice(endpoint_slice: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (namespace, Service name) an EndpointSlice belongs to."""
    meta = endpoint_slice.get("metadata") or {}
    service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    return (str(meta.get("namespace", "")), str(service)) if service else None


def build_endpoints(slices: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """`ip:port` of every endpoint that may take new requests: ready and not terminating.

    A nil `ready` counts as ready and a nil `terminating` as not (the EndpointSlice API's rule).
    A pod being drained is terminating (or gone), so it gets nothing new.
    """
    found: set[str] = set()
    for endpoint_slice in slices:
        ports = [p.get("port") for p in endpoint_slice.get("ports") or [] if p.get("name") == "http"]
        if not ports or not isinstance(ports[0], int):
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                found.add(f"{host}:{ports[0]}")
    return tuple(sorted(found))


@dataclass(frozen=True)
class Scope:
    """What the request's path narrowed the search to."""

    namespace: str | None = None
    service: str | None = None


def resolve_route(routes: Iterable[ServiceRoute], model: Any, scope: Scope) -> ServiceRoute | RouteError:
    if scope.namespace is not None and scope.service is not None:
        return _resolve_service(routes, model, scope.namespace, scope.service)
    if not isinstance(model, str) or not model:
        return bad_request("`model` is required: the name of the model to use", "missing_model")
    matches = sorted(
        (r for r in routes if r.model == model and scope.namespace in (None, r.namespace)),
        key=lambda r: r.key,
    )
    if not matches:
        where = f" in namespace {scope.namespace}" if scope.namespace else ""
        return not_found(f"The model `{model}` does not exist{where}.")
    if len(matches) > 1:
        paths = ", ".join(r.path for r in matches[:8])
        return bad_request(
            f"The model `{model}` is served by {len(matches)} InferenceServices; "
            f"address one by its base URL: {paths}",
            "ambiguous_model",
        )
    return matches[0]


def _resolve_service(
    routes: Iterable[ServiceRoute], model: Any, namespace: str, name: str
) -> ServiceRoute | RouteError:
    route = next((r for r in routes if r.key == (namespace, name)), None)
    if route is None:
        return not_found(f"No InferenceService {namespace}/{name} is served by this gateway.")
    if model not in (None, route.model):
        return not_found(f"The model `{model}` does not exist; {namespace}/{name} serves `{route.model}`.")
    return route


@dataclass(frozen=True)
class WaitPlan:
    """How a request that finds no free slot waits, or why it does not."""

    timeout: float
    activate: bool = False
    """Raise the service's replicas from zero to one."""
    refuse: RouteError | None = None


def plan_wait(route: ServiceRoute, ready_endpoints: int) -> WaitPlan:
    if ready_endpoints > 0:
        return WaitPlan(route.queue_timeout)
    if route.blocked is not None:
        return WaitPlan(0, refuse=unavailable(_not_serving(route, route.blocked), NOT_SERVING_RETRY_AFTER))
    if route.replicas == 0 and not route.may_activate:
        why = (
            "it has 0 replicas and does not scale from zero "
            "(scaling with minReplicas 0 lets requests wake it)"
        )
        return WaitPlan(0, refuse=unavailable(_not_serving(route, why), NOT_SERVING_RETRY_AFTER))
    timeout = max(route.queue_timeout, route.activation_timeout)
    return WaitPlan(timeout, activate=route.replicas == 0)


def _not_serving(route: ServiceRoute, why: str) -> str:
    return f"InferenceService {route.namespace}/{route.name} cannot serve requests: {why}"


def queue_full(route: ServiceRoute) -> RouteError:
    return RouteError(
        429,
        "rate_limit_exceeded",
        "queue_full",
        f"{route.namespace}/{route.name} has {route.max_queued} requests waiting for a replica; try again",
        QUEUE_FULL_RETRY_AFTER,
    )


def waited_too_long(route: ServiceRoute, waited: float, starting: bool) -> RouteError:
    what = "for a replica to start" if starting else "for a free slot"
    return unavailable(
        f"{route.namespace}/{route.name}: no reply after waiting {waited:.0f}s {what}; try again",
        NOT_SERVING_RETRY_AFTER if starting else QUEUE_TIMEOUT_RETRY_AFTER,
        "queue_timeout",
    )


LOAD_TIE_FRACTION = 1 / 8
"""Loads within this fraction above the least count as ties, taken in turn. Strictly least picks
the replica whose requests just ended, in a batching engine often the one that just finished a
decode step: the new request then waits nearly a whole step for its first token. With ties, the
gateway's added median TTFT at 1,000 streams of 20 tokens/s fell from 13.3-13.5 to 4.2-5.8 ms
(bench/gateway/README.md). A difference of a few percent of a large load says nothing of a
replica's speed; below 8 outstanding requests the least is strict."""


def pick_endpoint(
    in_flight: Mapping[str, int], slots: int, exclude: Collection[str], turn: int
) -> str | None:
    """The endpoint with the fewest outstanding requests and a free slot, or one within
    LOAD_TIE_FRACTION of that; ties taken in turn."""
    free = [(n, a) for a, n in in_flight.items() if n < slots and a not in exclude]
    if not free:
        return None
    least = min(n for n, _ in free)
    bound = least + int(least * LOAD_TIE_FRACTION)
    ties = sorted(a for n, a in free if n <= bound)
    return ties[turn % len(ties)]


@dataclass
class RetryBudget:
    """Retries allowed in a sliding window: at most `ratio` of the requests, plus `floor` per window.

    A fleet that fails most tries then gets few retries (no storm); a lone failure still gets one.
    """

    ratio: float = 0.2
    floor: int = 3
    window: float = 10.0
    _requests: deque[float] = field(default_factory=deque)
    _retries: deque[float] = field(default_factory=deque)

    def record_request(self, now: float) -> None:
        self._requests.append(now)
        self._forget_before(now - self.window)

    def try_spend(self, now: float) -> bool:
        """Whether one more retry fits the budget now; if so it is counted."""
        self._forget_before(now - self.window)
        if len(self._retries) >= self.floor + math.floor(self.ratio * len(self._requests)):
            return False
        self._retries.append(now)
        return True

    def _forget_before(self, cutoff: float) -> None:
        for times in (self._requests, self._retries):
            while times and times[0] <= cutoff:
                times.popleft()

    @property
    def remembered(self) -> int:
        return len(self._requests) + len(self._retries)


RETRY_BACKOFF_SECONDS = 0.1
RETRY_BACKOFF_MAX_SECONDS = 2.0


def compute_retry_backoff(attempt: int) -> float:
    """Seconds to wait before trying again an endpoint that failed `attempt` times in a row:
    0.1, 0.2, 0.4 ... at most 2."""
    return float(min(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_SECONDS))


def compute_retry(status: int | None, sent_bytes: bool, attempt: int, max_attempts: int) -> bool:
    """Whether a failed try may be tried again on another endpoint (before spending the budget).

    `status` None is a connect error or a reset before a response. Never once bytes reached the
    client: the client would get two answers spliced together.
    """
    if sent_bytes or attempt >= max_attempts:
        return False
    return status is None or status in RETRYABLE_STATUSES
