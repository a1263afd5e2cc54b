"""The autoscaler's Prometheus client: credentials per query, bounded answers, messages without secrets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from inferfleet.localcluster.ports import free_port
from inferfleet.localcluster.waiting import wait_for
from inferfleet.metrics.prometheus import MetricsUnavailableError, QueueReader, redact_url
from inferfleet.planning.queue_queries import QueueSample
from inferfleet.runtime.config import PrometheusConfig


@dataclass
class FakePrometheus:
    """Answers /api/v1/query with `status` and `body`; records what each request carried."""

    status: int = 200
    body: Any = field(
        default_factory=lambda: {"status": "success", "data": {"resultType": "vector", "result": []}}
    )
    delay: float = 0.0
    requests: list[tuple[dict[str, str], dict[str, list[str]]]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    state = FakePrometheus(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            state.requests.append((dict(self.headers), form))
            time.sleep(state.delay)
            payload = json.dumps(state.body).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def vector(*values: float) -> dict[str, Any]:
    result = [{"metric": {"pod": f"p{i}"}, "value": [0, str(v)]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def failure(reader: QueueReader, promql: str = "up") -> str:
    with pytest.raises(MetricsUnavailableError) as failed:
        reader.query("override", promql)
    return str(failed.value)


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        (
            "https://user:s3cret@prom.example:9090/prometheus?token=abc",
            "https://prom.example:9090/prometheus",
        ),
        ("http://prom:9090", "http://prom:9090"),
    ],
)
def test_logged_urls_lose_their_userinfo_and_query(url: str, logged: str) -> None:
    assert redact_url(url) == logged


def test_a_query_carries_its_server_side_timeout_series_limit_and_a_token_read_each_time(
    fake: FakePrometheus, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    config = PrometheusConfig(url=f"http://127.0.0.1:{fake.port}", bearer_token_file=str(token),
                              timeout_seconds=4, max_series=50)  # fmt: skip
    reader = QueueReader(config)
    fake.body = vector(3)
    assert reader.read_override("sum(q)") == QueueSample(3.0, None)
    token.write_text("rotated-token\n")
    reader.query("override", "sum(q)")
    (first_headers, form), (second_headers, _) = fake.requests
    assert form == {"query": ["sum(q)"], "timeout": ["4s"], "limit": ["50"]}
    assert first_headers["Authorization"] == "Bearer first-token"
    assert second_headers["Authorization"] == "Bearer rotated-token"


def test_basic_auth_comes_from_files_or_the_url_and_the_url_never_reaches_a_message(
    fake: FakePrometheus, tmp_path: Path
) -> None:
    (tmp_path / "user").write_text("op")
    (tmp_path / "password").write_text("hunter2")
    files = PrometheusConfig(url=f"http://127.0.0.1:{fake.port}", username_file=str(tmp_path / "user"),
                             password_file=str(tmp_path / "password"))  # fmt: skip
    QueueReader(files).query("fleet", "up")
    in_url = QueueReader(PrometheusConfig(url=f"http://op:hunter2@127.0.0.1:{fake.port}"))
    in_url.query("fleet", "up")
    assert [h["Authorization"] for h, _ in fake.requests] == ["Basic b3A6aHVudGVyMg=="] * 2

    fake.status, fake.body = 401, {"status": "error", "error": "unauthorized"}
    assert (
        failure(in_url) == "Prometheus query failed: HTTP 401: Prometheus refused the operator's credentials"
    )
    closed = QueueReader(PrometheusConfig(url=f"http://op:hunter2@127.0.0.1:{free_port()}/prom"))
    assert failure(closed) == "Prometheus query failed: connection refused"


def test_prometheus_errors_are_passed_on_without_anything_else(fake: FakePrometheus) -> None:
    reader = QueueReader(PrometheusConfig(url=f"http://127.0.0.1:{fake.port}"))
    fake.status = 400
    fake.body = {
        "status": "error",
        "errorType": "bad_data",
        "error": 'invalid parameter "query": parse error',
    }
    assert failure(reader) == 'Prometheus query failed: HTTP 400: invalid parameter "query": parse error'
    fake.status, fake.body = 503, "unavailable"
    assert failure(reader) == "Prometheus query failed: HTTP 503"


def test_answers_beyond_the_series_limit_or_of_the_wrong_type_are_refused(fake: FakePrometheus) -> None:
    reader = QueueReader(PrometheusConfig(url=f"http://127.0.0.1:{fake.port}", max_series=2))
    fake.body = vector(1, 2, 3)
    assert failure(reader) == "Prometheus query failed: 3 series, more than the limit of 2"
    fake.body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    assert failure(reader) == (
        "Prometheus query failed: the query returns a matrix; it must return an instant vector or a scalar"
    )
    fake.body = {"status": "success", "data": {"resultType": "scalar", "result": [0, "7"]}}
    assert reader.read_override("7") == QueueSample(7.0, None)
    fake.body = {"status": "success", "data": {"resultType": "vector", "result": ["x" * 3000] * 2}}
    assert failure(reader) == "Prometheus query failed: the answer is larger than 4096 bytes"


def test_a_slow_answer_fails_at_the_timeout(fake: FakePrometheus) -> None:
    reader = QueueReader(PrometheusConfig(url=f"http://127.0.0.1:{fake.port}", timeout_seconds=0.3))
    fake.delay = 1.0
    started = time.monotonic()
    assert failure(reader) == "Prometheus query failed: no answer within 0.3s"
    assert time.monotonic() - started < 0.9


def test_a_service_has_at_most_one_query_in_flight_and_hears_of_its_answer(fake: FakePrometheus) -> None:
    reader = QueueReader(PrometheusConfig(url=f"http://127.0.0.1:{fake.port}", timeout_seconds=5))
    fake.delay, fake.body = 0.5, vector(2)
    answers: dict[str, list[QueueSample]] = {"a": [], "b": []}
    everything = threading.Event()

    def on_done(name: str) -> Callable[[Future[QueueSample]], None]:
        def record(done: Future[QueueSample]) -> None:
            answers[name].append(done.result())
            if all(answers.values()):
                everything.set()

        return record

    assert reader.submit_override(("ml", "a"), "q", on_done("a"))
    assert not reader.submit_override(("ml", "a"), "q", on_done("a"))  # still running: not queued again
    assert reader.submit_override(("ml", "b"), "q", on_done("b"))
    assert everything.wait(timeout=5)
    assert answers == {"a": [QueueSample(2.0, None)], "b": [QueueSample(2.0, None)]}
    assert len(fake.requests) == 2
    wait_for(lambda: reader.submit_override(("ml", "a"), "q", on_done("a")), timeout=5, what="a's key freed")
    reader.close()


def test_unreadable_credentials_say_so_without_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-token")
    reader = QueueReader(PrometheusConfig(url="http://127.0.0.1:1", bearer_token_file=missing))
    assert failure(reader) == "Prometheus query failed: cannot read the operator's Prometheus credentials"
