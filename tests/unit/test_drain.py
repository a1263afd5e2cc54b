"""A replica being removed finishes its in-flight requests before the engine stops."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inferfleet.api import EngineKind
from inferfleet.planning.drain import (
    BUSY_METRICS,
    SHUTDOWN_SECONDS,
    build_drain_hook,
    termination_grace_seconds,
)


class Engine(ThreadingHTTPServer):
    """Serves vLLM-style /metrics; `busy` requests finish at `idle_at` (monotonic)."""

    def __init__(self, busy: int, idle_after: float | None) -> None:
        super().__init__(("127.0.0.1", 0), MetricsHandler)
        self.busy = busy
        self.idle_at = None if idle_after is None else time.monotonic() + idle_after
        self.scrapes = 0


class MetricsHandler(BaseHTTPRequestHandler):
    server: Engine

    def do_GET(self) -> None:
        s = self.server
        s.scrapes += 1
        running = 0 if s.idle_at is not None and time.monotonic() >= s.idle_at else s.busy
        body = (
            "# HELP vllm:num_requests_running Running requests.\n"
            f'vllm:num_requests_running{{model_name="m"}} {running}.0\n'
            'vllm:num_requests_waiting{model_name="m"} 0.0\n'
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    busy, idle_after = request.param
    server = Engine(busy, idle_after)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def run_hook(port: int, drain_seconds: int) -> float:
    hook = build_drain_hook(EngineKind.VLLM, port, drain_seconds)
    assert hook is not None
    command = hook["preStop"]["exec"]["command"]
    assert command[0] == "python3"
    started = time.monotonic()
    subprocess.run([sys.executable, *command[1:]], check=True, timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("engine", [(3, 2.5)], indirect=True)
def test_the_hook_waits_until_in_flight_requests_are_done(engine: Engine) -> None:
    took = run_hook(engine.server_address[1], drain_seconds=20)
    assert 2.5 <= took < 10
    assert engine.scrapes >= 2


@pytest.mark.parametrize("engine", [(3, None)], indirect=True)
def test_the_hook_gives_up_after_drain_seconds(engine: Engine) -> None:
    took = run_hook(engine.server_address[1], drain_seconds=2)
    assert 2 <= took < 6


def test_the_hook_returns_at_once_when_the_engine_does_not_answer() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    assert run_hook(port, drain_seconds=20) < 5


@pytest.mark.parametrize("kind", [EngineKind.VLLM, EngineKind.SGLANG, EngineKind.TGI])
def test_engines_with_queue_metrics_drain_and_the_grace_period_covers_it(kind: EngineKind) -> None:
    hook = build_drain_hook(kind, 8000, 120)
    assert hook is not None
    assert hook["preStop"]["exec"]["command"][-len(BUSY_METRICS[kind]) :] == list(BUSY_METRICS[kind])
    assert termination_grace_seconds(kind, 120) == 120 + SHUTDOWN_SECONDS


def test_custom_engines_and_zero_drain_stop_at_once() -> None:
    assert build_drain_hook(EngineKind.CUSTOM, 8000, 120) is None
    assert build_drain_hook(EngineKind.VLLM, 8000, 0) is None
    assert termination_grace_seconds(EngineKind.CUSTOM, 120) == SHUTDOWN_SECONDS
