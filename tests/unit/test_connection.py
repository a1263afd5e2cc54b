"""The operator's API client: bounded QPS and concurrency, and 429s retried after Retry-After."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.kube.connection import ClientLimits, ThrottledApiClient, TokenBucket


class FakeApiServer(ThreadingHTTPServer):
    """Answers GET /api/v1/namespaces/<name>: first `throttle` requests 429, then 200 after `delay`."""

    def __init__(self, throttle: int = 0, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.throttle, self.delay = throttle, delay
        self.requests = self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def do_GET(self) -> None:
        s = self.server
        with s.lock:
            s.requests += 1
            throttled = s.requests <= s.throttle
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        time.sleep(s.delay)
        with s.lock:
            s.in_flight -= 1
        if throttled:
            body = b'{"kind":"Status","code":429,"reason":"TooManyRequests"}'
            self.send_response(429)
            self.send_header("Retry-After", "0")
        else:
            name = self.path.rsplit("/", 1)[-1]
            body = json.dumps({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    srv = FakeApiServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()


def api(server: FakeApiServer, limits: ClientLimits, throttled: list[int] | None = None) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    count = throttled if throttled is not None else []
    return client.CoreV1Api(ThrottledApiClient(configuration, limits, on_throttled=lambda: count.append(1)))


def test_a_429_is_retried_after_retry_after_and_counted(server: FakeApiServer) -> None:
    server.throttle = 2
    throttled: list[int] = []
    ns = api(server, ClientLimits(), throttled).read_namespace("demo")
    assert ns.metadata.name == "demo"
    assert server.requests == 3
    assert len(throttled) == 2


def test_retries_on_429_are_bounded(server: FakeApiServer) -> None:
    server.throttle = 100
    with pytest.raises(ApiException) as refused:
        api(server, ClientLimits(retries_on_429=2)).read_namespace("demo")
    assert refused.value.status == 429
    assert server.requests == 3


def test_requests_in_flight_never_exceed_the_concurrency_limit(server: FakeApiServer) -> None:
    server.delay = 0.1
    core = api(server, ClientLimits(concurrency=2))
    with ThreadPoolExecutor(max_workers=6) as pool:
        names = list(pool.map(lambda i: core.read_namespace(f"ns-{i}").metadata.name, range(6)))
    assert names == [f"ns-{i}" for i in range(6)]
    assert server.max_in_flight == 2


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)  # the 4th waits one token's time
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] = 10.0  # refilled, but never above the burst
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() > 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0)])
def test_a_token_bucket_refuses_nonsense_limits(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(rate, burst)
