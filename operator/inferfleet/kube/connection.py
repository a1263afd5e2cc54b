"""One shared Kubernetes API client per operator process, with bounded QPS and concurrency.

Like client-go's rate limiter: a token bucket (`qps`, `burst`) and at most `concurrency`
requests in flight, so a burst of reconciles cannot flood the API server. A 429 (API Priority
and Fairness rejected the request before running it, so a retry is safe for every verb) is
retried after the server's Retry-After, a bounded number of times.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from urllib3.util.retry import Retry

from inferfleet.runtime.config import ClientLimits

__all__ = ["ClientLimits", "ThrottledApiClient", "TokenBucket", "connect", "kopf_connection_limit"]


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; return how long to wait before using it (0 when one was available)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def retry_after_seconds(header: str | None, limits: ClientLimits) -> float:
    """The server's Retry-After (1 s when absent), capped, with jitter so retries don't align."""
    try:
        seconds = float(header or 1)
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), limits.max_retry_after_seconds) * random.uniform(1.0, 1.5)


class ThrottledApiClient(client.ApiClient):  # type: ignore[misc]
    def __init__(
        self,
        configuration: Any,
        limits: ClientLimits,
        on_throttled: Callable[[], None] = lambda: None,
    ) -> None:
        # 429s come back here to be counted and retried under the limits, not inside urllib3
        # (which retries idempotent ones silently); connection errors keep urllib3's retries.
        configuration.retries = Retry(total=3, status=0, respect_retry_after_header=False)
        super().__init__(configuration)
        self.limits = limits
        self._bucket = TokenBucket(limits.qps, limits.burst)
        self._slots = threading.BoundedSemaphore(limits.concurrency)
        self._on_throttled = on_throttled

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        """Every request of every API class goes through here; errors are raised by the caller."""
        attempt = 0
        while True:
            time.sleep(self._bucket.reserve())
            with self._slots:
                response = super().call_api(*args, **kwargs)
            if response.status != 429 or attempt >= self.limits.retries_on_429:
                return response
            response.read()  # release the connection
            self._on_throttled()
            attempt += 1
            time.sleep(retry_after_seconds(response.headers.get("Retry-After"), self.limits))


def connect(limits: ClientLimits | None = None, on_throttled: Callable[[], None] = lambda: None) -> Any:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return ThrottledApiClient(configuration, limits or ClientLimits(), on_throttled)


# kopf's own watch streams: InferenceServices, nodes, pods, Deployments, StatefulSets, and its
# CRD and peering watches; each holds a connection for as long as it streams.
_WATCHED_PER_NAMESPACE = 4
_WATCHED_CLUSTER_WIDE = 4


def kopf_connection_limit(limits: ClientLimits, namespaces: int) -> int:
    """Connections kopf may open: one per watch stream plus `limits.concurrency` for its writes.

    kopf's default session has no limit: a burst of new objects opens a connection per object
    for its patches (each with a 256 KiB TLS buffer), and nothing bounds its load on the API server.
    """
    return limits.concurrency + _WATCHED_CLUSTER_WIDE + _WATCHED_PER_NAMESPACE * max(namespaces, 1)
