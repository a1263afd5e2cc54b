"""A simulated inference engine for real pods: an OpenAI-style HTTP server whose generation is a wait.

`inferfleet sim-engine` stands in for vLLM where no GPU runs a model (the kind e2e workflow): it
serves /v1/completions, /v1/chat/completions, /v1/models, /health and vLLM's queue metrics on
/metrics. At most `max_concurrent` requests run at once, each for max_tokens / tokens_per_second
seconds; the others wait in the engine's queue, as in vLLM's running batch and waiting queue.

On SIGTERM it stops accepting connections, lets the requests it holds finish for up to
`drain_seconds`, then cuts the rest (they get 503) and exits.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferfleet.sim.exporter import TEXT_FORMAT

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 8192
MAX_BODY_BYTES = 1 << 20
CUT_REPLY_SECONDS = 2.0
"""After the drain, time the cut requests get to send their 503 before the server closes."""


@dataclass(frozen=True)
class EngineConfig:
    model: str
    max_concurrent: int = 8
    tokens_per_second: float = 100.0
    host: str = "0.0.0.0"
    port: int = 8000
    drain_seconds: float = 20.0


class RequestError(Exception):
    """A request the engine refuses, with the HTTP status it answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Counts:
    running: int = 0
    waiting: int = 0
    succeeded: int = 0
    connections: int = 0


class SimEngine:
    def __init__(self, config: EngineConfig) -> None:
        if config.max_concurrent < 1 or config.tokens_per_second <= 0:
            raise ValueError("max_concurrent must be >= 1 and tokens_per_second > 0")
        self.config = config
        self._counts = Counts()
        self._changed = threading.Condition()
        self._cut = threading.Event()
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(self))
        self._server = _EngineServer(self, (config.host, config.port))
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-engine", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimEngine:
        self._thread.start()
        return self

    def counts(self) -> Counts:
        with self._changed:
            return Counts(**vars(self._counts))

    def stop(self, drain_seconds: float | None = None) -> bool:
        """Stop accepting connections, let held requests finish for `drain_seconds`, then cut the rest.

        Returns whether every request finished within the drain.
        """
        drain = self.config.drain_seconds if drain_seconds is None else drain_seconds
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()  # new connections are refused from here on, not left in the backlog
        with self._changed:
            drained = self._changed.wait_for(lambda: self._counts.connections == 0, timeout=drain)
            self._cut.set()
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._counts.connections == 0, timeout=CUT_REPLY_SECONDS)
        return drained

    def generate(self, max_tokens: int) -> None:
        """Wait for a free slot, then "generate" `max_tokens` tokens; RequestError(503) when cut."""
        with self._changed:
            self._counts.waiting += 1
            self._changed.wait_for(
                lambda: self._cut.is_set() or self._counts.running < self.config.max_concurrent
            )
            self._counts.waiting -= 1
            if self._cut.is_set():
                raise RequestError(503, "the engine is shutting down")
            self._counts.running += 1
        cut = self._cut.wait(max_tokens / self.config.tokens_per_second)
        with self._changed:
            self._counts.running -= 1
            self._counts.succeeded += 0 if cut else 1
            self._changed.notify_all()
        if cut:
            raise RequestError(503, "the engine shut down before the request finished")

    def connection_opened(self) -> None:
        with self._changed:
            self._counts.connections += 1

    def connection_closed(self) -> None:
        with self._changed:
            self._counts.connections -= 1
            self._changed.notify_all()


class _EngineServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: load arrives in bursts

    def __init__(self, engine: SimEngine, address: tuple[str, int]) -> None:
        self.engine = engine
        super().__init__(address, _EngineHandler)

    # Connections are counted from accept to close, so a drain also waits for requests still being read.
    def process_request(self, request: Any, client_address: Any) -> None:
        self.engine.connection_opened()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.engine.connection_closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.engine.connection_closed()


class _EngineCollector(Collector):
    """vLLM's queue metrics, read from the engine at scrape time."""

    def __init__(self, engine: SimEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        counts, model = self._engine.counts(), self._engine.config.model
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Requests in model execution batches.", labels=["model_name"]
        )
        running.add_metric([model], counts.running)
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", labels=["model_name"]
        )
        waiting.add_metric([model], counts.waiting)
        success = CounterMetricFamily(
            "vllm:request_success",
            "Requests processed successfully.",
            labels=["model_name", "finished_reason"],
        )
        success.add_metric([model, "length"], counts.succeeded)
        return [running, waiting, success]


class _EngineHandler(BaseHTTPRequestHandler):
    server: _EngineServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._reply(200, b"", "text/plain")
        elif path == "/metrics":
            self._reply(200, generate_latest(self.server.engine.registry), TEXT_FORMAT)
        elif path == "/v1/models":
            self._reply_json(200, models_listing(self.server.engine.config.model))
        else:
            self._reply_error(RequestError(404, f"no route {path}"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._reply_error(RequestError(404, f"no route {path}"))
            return
        engine = self.server.engine
        chat = path == "/v1/chat/completions"
        try:
            body = self._read_json()
            max_tokens = requested_tokens(body, engine.config.model, chat)
            engine.generate(max_tokens)
        except RequestError as e:
            self._reply_error(e)
            return
        self._reply_json(200, completion(engine.config.model, body, max_tokens, chat))

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as e:
            raise RequestError(400, f"the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body

    def _reply_error(self, error: RequestError) -> None:
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(error.status, "ServiceUnavailableError")
        self._reply_json(
            error.status,
            {"object": "error", "message": str(error), "type": kind, "param": None, "code": error.status},
        )

    def _reply_json(self, status: int, payload: dict[str, Any]) -> None:
        self._reply(status, json.dumps(payload).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def requested_tokens(body: dict[str, Any], model: str, chat: bool) -> int:
    """The tokens to generate for a request `body`, or RequestError when the engine refuses it."""
    if body.get("model") not in (None, model):
        raise RequestError(404, f"The model `{body['model']}` does not exist.")
    if body.get("stream"):
        raise RequestError(400, "the simulated engine does not stream")
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    value = next((body[n] for n in names if body.get(n) is not None), DEFAULT_MAX_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise RequestError(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    return value


def prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Words in the prompt: a stand-in for a tokenizer."""
    if chat:
        messages = body.get("messages")
        texts = (
            [m.get("content") for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        )
    else:
        prompt = body.get("prompt", "")
        texts = prompt if isinstance(prompt, list) else [prompt]
    return sum(len(t.split()) for t in texts if isinstance(t, str))


def completion(model: str, body: dict[str, Any], max_tokens: int, chat: bool) -> dict[str, Any]:
    text = " ".join(f"tok{i}" for i in range(max_tokens))
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
    prompt = prompt_tokens(body, chat)
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{**choice, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": max_tokens,
            "total_tokens": prompt + max_tokens,
        },
    }


def models_listing(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": int(time.time()), "owned_by": "inferfleet-sim"}],
    }


def serve(config: EngineConfig) -> int:
    """Run until SIGTERM or SIGINT, then drain and stop (the `inferfleet sim-engine` command)."""
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    engine = SimEngine(config).start()
    print(
        f"sim-engine: model {config.model} listening on {engine.url} "
        f"({config.max_concurrent} concurrent, {config.tokens_per_second:g} tokens/s)",
        flush=True,
    )
    while not stop_requested.wait(timeout=1.0):
        pass
    print(f"sim-engine: stopping, draining for up to {config.drain_seconds:g}s", flush=True)
    drained = engine.stop()
    counts = engine.counts()
    print(
        f"sim-engine: stopped ({'drained' if drained else 'cut requests after the drain'}; "
        f"{counts.succeeded} requests served)",
        file=sys.stdout,
        flush=True,
    )
    return 0
