"""A simulated inference engine for real pods: an OpenAI-style HTTP server whose generation is a clock.

`inferfleet sim-engine` stands in for vLLM where no GPU runs a model (the kind e2e workflow, the
gateway's tests and benchmarks): it serves /v1/completions and /v1/chat/completions (streamed as
server-sent events, or not), /v1/models, /health and vLLM's queue metrics on /metrics. At most
`max_concurrent` requests run at once; the others wait in the engine's FIFO queue, as in vLLM's
running batch and waiting queue. Like vLLM's batch, one decode-step clock per engine emits one
token to every running request each 1 / tokens_per_second seconds, so a thousand streams cost one
timer, not a thousand. A client that disconnects is cancelled and its slot freed at once.

The engines of one process share one event loop: `SimEngine.start()` runs it on a background
thread shared by every engine (so a test can host hundreds), `await start_async()` on the caller's
loop. On SIGTERM the command stops accepting connections, lets the requests it holds finish for up
to `drain_seconds`, then cuts the rest (503 before the first token, an error event mid-stream).

Each engine models vLLM's automatic prefix caching so that routing quality is measurable: the
prompt (whitespace-separated words; a chat's messages rendered in order as "role: content") is cut
into blocks of `block_tokens` words, each full block keyed by a hash of every word up to its end.
On admission the leading blocks already in the engine's LRU are hits; the request's first decode
step waits for the prefill of the other tokens at `prefill_tokens_per_second` (0: no prefill time).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import signal
import socket
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferfleet.gateway.chunked import push_chunk
from inferfleet.planning.prefix_routing import prompt_words
from inferfleet.sim.exporter import TEXT_FORMAT

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 8192
MAX_BODY_BYTES = 1 << 20
CUT_REPLY_SECONDS = 2.0
"""After the drain, time the cut requests get to send their 503 before the server closes."""
LISTEN_BACKLOG = 2048
"""Load arrives in bursts: a thousand streams connect at once."""
KEEPALIVE_SECONDS = 75.0

T = TypeVar("T")


@dataclass(frozen=True)
class EngineConfig:
    model: str
    max_concurrent: int = 8
    tokens_per_second: float = 100.0
    host: str = "0.0.0.0"
    port: int = 8000
    drain_seconds: float = 20.0
    block_tokens: int = 16
    """Words per prefix-cache block (vLLM's --block-size)."""
    cache_blocks: int = 4096
    """Blocks the prefix cache holds before evicting the least recently used."""
    prefill_tokens_per_second: float = 0.0
    """Prefill rate of uncached prompt tokens; 0 means prefill takes no time."""
    kv_cache_tokens: int | None = None
    """The KV cache's size in tokens (words): running requests hold their prompt and output so
    far in blocks of `block_tokens`; a request whose prompt does not fit waits. None: the
    prefix cache's size, `cache_blocks * block_tokens` (vLLM's one pool of KV blocks)."""
    step_phase: float | None = None
    """Where in each decode step the clock ticks, as a fraction of a step on the machine's monotonic
    clock: engines given phases k/n tick at evenly spread moments, as independent servers' steps
    fall. None: the clock starts one step after a request reaches an idle engine."""


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
    cancelled: int = 0
    """Requests whose client went away before the generation ended."""
    prompt_tokens: int = 0
    """Prompt words of every admitted request (vLLM's prefix-cache queries)."""
    prefix_hit_tokens: int = 0
    """Of those, words found in the prefix cache."""
    cached_blocks: int = 0
    kv_usage: float = 0.0
    """KV blocks held by running requests over the KV cache's blocks (vllm:kv_cache_usage_perc)."""


@dataclass(frozen=True)
class Prompt:
    """What the prefix cache sees of a request: its length in words and its full blocks' keys."""

    words: int = 0
    blocks: tuple[int, ...] = ()


class PrefixCache:
    """An LRU of prompt blocks keyed by prefix hashes, counting queries and hits in tokens as vLLM does."""

    def __init__(self, capacity: int, block_tokens: int) -> None:
        self.capacity = capacity
        self.block_tokens = block_tokens
        self.blocks: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.queried_tokens = 0
        self.hit_tokens = 0

    def admit(self, prompt: Prompt) -> int:
        """The prompt's tokens found cached (its leading blocks present); then all its blocks are cached."""
        hits = 0
        while hits < len(prompt.blocks) and prompt.blocks[hits] in self.blocks:
            hits += 1
        for key in prompt.blocks:
            self.blocks[key] = None
            self.blocks.move_to_end(key)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        cached = hits * self.block_tokens
        self.queried_tokens += prompt.words
        self.hit_tokens += cached
        return cached

    @property
    def usage(self) -> float:
        return len(self.blocks) / self.capacity if self.capacity else 0.0


def block_hashes(words: Sequence[str], block_tokens: int) -> tuple[int, ...]:
    """Keys of the full blocks of `words`: each a hash of its block and the previous block's key."""
    keys, previous = [], b""
    for start in range(0, len(words) - block_tokens + 1, block_tokens):
        block = "\x00".join(words[start : start + block_tokens]).encode()
        previous = hashlib.blake2b(previous + b"\x01" + block, digest_size=8).digest()
        keys.append(int.from_bytes(previous, "big"))
    return tuple(keys)


def prompt_of(body: dict[str, Any], chat: bool, block_tokens: int) -> Prompt:
    words = prompt_words(body, chat)
    return Prompt(len(words), block_hashes(words, block_tokens))


class _State(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    CUT = "cut"
    CANCELLED = "cancelled"


class _Request:
    """One request's place in the engine: its state and the tokens the clock produced for it."""

    __slots__ = (
        "_waiter",
        "blocks",
        "chunks",
        "max_tokens",
        "produced",
        "prompt_words",
        "ready_at",
        "sent",
        "state",
        "stream",
        "transport",
    )

    def __init__(self, max_tokens: int, stream: bool, prompt: Prompt) -> None:
        self.max_tokens = max_tokens
        self.stream = stream
        self.prompt_words, self.blocks = prompt.words, prompt.blocks
        self.ready_at = 0.0
        """Loop time the prefill ends: the request gets no decode step before it."""
        self.produced = 0
        self.sent = 0
        self.state = _State.WAITING
        self.transport: asyncio.Transport | None = None
        """A stream's connection once its headers are out: the clock writes tokens there itself."""
        self.chunks: _StreamFormat | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def held(self) -> bool:
        return self.state in (_State.WAITING, _State.RUNNING)

    async def progress(self) -> None:
        """Wait until the handler has work: a token it must write, the end of the generation, a cut."""
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self) -> bool:
        """Write the new tokens as one HTTP chunk straight to the connection (gateway/chunked.py),
        or False when the handler must: it still writes the first token (with the headers), the
        last ones, and any token the client is too slow to take (backpressure)."""
        transport, chunks = self.transport, self.chunks
        if transport is None or chunks is None:
            return False
        if not push_chunk(transport, chunks.tokens(self.sent, self.produced)):
            return False
        self.sent = self.produced
        return True


def first_tick(now: float, monotonic: float, step: float, phase: float | None) -> float:
    """Loop time of the first step of an idle clock (the loop's clock reads `now` when the
    machine's monotonic clock reads `monotonic`): a step from now, or the next tick of `phase`."""
    if phase is None:
        return now + step
    offset = phase * step
    # The slack makes a moment on a tick, however the division rounds, wait for the next one.
    steps = math.floor((monotonic - offset) / step + 1e-9) + 1
    return now + (offset + steps * step - monotonic)


class _Batch:
    """The running batch, the FIFO queue and the decode-step clock of one engine (its loop only)."""

    def __init__(
        self,
        max_concurrent: int,
        tokens_per_second: float,
        cache: PrefixCache | None = None,
        prefill_tokens_per_second: float = 0.0,
        kv_blocks: int | None = None,
        step_phase: float | None = None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.step_phase = step_phase
        self.kv_blocks = kv_blocks
        """KV-cache blocks for running requests; None: unlimited."""
        self.step = 1.0 / tokens_per_second
        self.cache = cache if cache is not None else PrefixCache(0, 1)
        self.prefill_rate = prefill_tokens_per_second
        self.running: dict[_Request, None] = {}  # dicts: FIFO order and O(1) removal
        self.waiting: dict[_Request, None] = {}
        self.succeeded = 0
        self.cancelled = 0
        self.cut = False
        self._tick_at = 0.0
        self._tick: asyncio.TimerHandle | None = None

    def submit(self, max_tokens: int, stream: bool, prompt: Prompt = Prompt()) -> _Request:
        if self.cut:
            raise RequestError(503, "the engine is shutting down")
        request = _Request(max_tokens, stream, prompt)
        self.waiting[request] = None
        self._admit()
        return request

    def release(self, request: _Request) -> None:
        """The request's handler is done: a request still held was cancelled by its client."""
        if not request.held:
            return
        self.running.pop(request, None)
        self.waiting.pop(request, None)
        request.state = _State.CANCELLED
        self.cancelled += 1
        self._admit()

    def cut_all(self) -> None:
        """Refuse new requests and end every held one (the end of a drain)."""
        self.cut = True
        for request in [*self.running, *self.waiting]:
            request.state = _State.CUT
            request.wake()
        self.running.clear()
        self.waiting.clear()

    def _admit(self) -> None:
        """Move queued requests into free slots; start the clock if it was idle."""
        self._fill_slots()
        if self.running and self._tick is None:
            loop = asyncio.get_running_loop()
            start = first_tick(loop.time(), time.monotonic(), self.step, self.step_phase)
            self._schedule(loop, start)

    def held_blocks(self, request: _Request) -> int:
        """KV blocks a running request holds: its prompt and its output so far."""
        return max(1, -(-(request.prompt_words + request.produced) // self.cache.block_tokens))

    def kv_used(self) -> int:
        return sum(self.held_blocks(r) for r in self.running)

    def _fits(self, request: _Request, used: int) -> bool:
        """vLLM's scheduler admits a prompt only into free KV blocks; alone, a request always runs
        (growth past the capacity, which vLLM resolves by preemption, is not modelled)."""
        return (
            self.kv_blocks is None or not self.running or used + self.held_blocks(request) <= self.kv_blocks
        )

    def _fill_slots(self) -> None:
        used = self.kv_used() if self.kv_blocks is not None else 0
        while self.waiting and len(self.running) < self.max_concurrent:
            request = next(iter(self.waiting))
            if not self._fits(request, used):
                break  # first come, first served: the head waits for room, nobody overtakes it
            used += self.held_blocks(request)
            del self.waiting[request]
            request.state = _State.RUNNING
            self.running[request] = None
            self._prefill(request)

    def _prefill(self, request: _Request) -> None:
        """Look the prompt up in the prefix cache; the uncached tokens delay the request's first step."""
        cached = self.cache.admit(Prompt(request.prompt_words, request.blocks))
        uncached = request.prompt_words - cached
        if self.prefill_rate > 0 and uncached > 0:
            request.ready_at = asyncio.get_running_loop().time() + uncached / self.prefill_rate

    def _schedule(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self._tick_at = at
        self._tick = loop.call_at(at, self._decode_step)

    def _decode_step(self) -> None:
        """A token to every running request per step due; finished ones free their slots for the queue.

        A timer fires late (the loop's granularity is about 1 ms, and it may be busy): the steps
        missed meanwhile are emitted now, so the configured rate holds even at 1 step per 0.1 ms.
        """
        self._tick = None
        loop = asyncio.get_running_loop()
        steps = 1 + int((loop.time() - self._tick_at) / self.step)
        finished = []
        for request in self.running:
            due = self._steps_due(request, steps)
            if due == 0:
                continue
            request.produced = min(request.produced + due, request.max_tokens)
            if request.produced == request.max_tokens:
                finished.append(request)
            elif request.stream and not request.push():
                request.wake()
        for request in finished:
            del self.running[request]
            request.state = _State.DONE
            self.succeeded += 1
            request.wake()
        self._fill_slots()
        if self.running:
            self._schedule(loop, self._tick_at + steps * self.step)

    def _steps_due(self, request: _Request, steps: int) -> int:
        """Of the `steps` steps due from `_tick_at` on, those at or after the end of the request's prefill."""
        if request.ready_at <= self._tick_at:
            return steps
        # The tiny slack keeps a step that lands exactly on the prefill's end from rounding past it.
        first = math.ceil((request.ready_at - self._tick_at) / self.step - 1e-9)
        return max(0, steps - first)


class _HttpServer(web.Server):
    """aiohttp's low-level server, counting connections from accept to close for the drain."""

    def __init__(self, engine: SimEngine) -> None:
        super().__init__(
            engine._handle, handler_cancellation=True, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS
        )
        self._engine = engine

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._engine._connection_opened()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._engine._connection_closed()


class SimEngine:
    def __init__(self, config: EngineConfig) -> None:
        if config.max_concurrent < 1 or config.tokens_per_second <= 0:
            raise ValueError("max_concurrent must be >= 1 and tokens_per_second > 0")
        if config.block_tokens < 1 or config.cache_blocks < 0 or config.prefill_tokens_per_second < 0:
            raise ValueError("block_tokens must be >= 1, cache_blocks and prefill_tokens_per_second >= 0")
        self.config = config
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(self))
        if config.kv_cache_tokens is not None and config.kv_cache_tokens < 1:
            raise ValueError("kv_cache_tokens must be >= 1")
        if config.step_phase is not None and not 0 <= config.step_phase < 1:
            raise ValueError("step_phase must be in [0, 1)")
        cache = PrefixCache(config.cache_blocks, config.block_tokens)
        kv_tokens = config.kv_cache_tokens or config.cache_blocks * config.block_tokens
        self._batch = _Batch(
            config.max_concurrent,
            config.tokens_per_second,
            cache,
            config.prefill_tokens_per_second,
            max(1, kv_tokens // config.block_tokens),
            config.step_phase,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: _HttpServer | None = None
        self._listener: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._connections = 0
        self._no_connections = asyncio.Event()
        self._busy: dict[RequestHandler, int] = {}  # connections inside a request: finish, then close
        self._stopping = False

    @property
    def url(self) -> str:
        if self._address is None:
            raise RuntimeError("the engine is not started")
        host, port = self._address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def counts(self) -> Counts:
        batch = self._batch
        return Counts(
            running=len(batch.running),
            waiting=len(batch.waiting),
            succeeded=batch.succeeded,
            connections=self._connections,
            cancelled=batch.cancelled,
            prompt_tokens=batch.cache.queried_tokens,
            prefix_hit_tokens=batch.cache.hit_tokens,
            cached_blocks=len(batch.cache.blocks),
            kv_usage=min(1.0, batch.kv_used() / batch.kv_blocks) if batch.kv_blocks else 0.0,
        )

    def start(self) -> SimEngine:
        """Listen on the process's shared engine loop (a background thread)."""
        return _run_on(shared_loop(), self.start_async())

    async def start_async(self) -> SimEngine:
        """Listen on the running loop; the engine lives on that loop from now on."""
        self._loop = asyncio.get_running_loop()
        self._http = _HttpServer(self)
        self._listener = await self._loop.create_server(
            self._http, self.config.host, self.config.port, backlog=LISTEN_BACKLOG
        )
        self._address = self._listener.sockets[0].getsockname()[:2]
        self._no_connections.set()
        return self

    def stop(self, drain_seconds: float | None = None) -> bool:
        """Stop accepting connections, let held requests finish for `drain_seconds`, then cut the rest.

        Returns whether every request finished within the drain.
        """
        if self._loop is None:
            return True
        return _run_on(self._loop, self.stop_async(drain_seconds))

    async def stop_async(self, drain_seconds: float | None = None) -> bool:
        drain = self.config.drain_seconds if drain_seconds is None else drain_seconds
        if self._listener is None or self._http is None:
            return True
        self._stopping = True
        self._listener.close()  # new connections are refused from here on, not left in the backlog
        for connection in self._http.connections:
            # An idle keep-alive connection closes now; one inside a request after its response.
            connection.close() if connection in self._busy else connection.force_close()
        drained = await self._wait_no_connections(drain)
        self._batch.cut_all()
        if not await self._wait_no_connections(CUT_REPLY_SECONDS):
            self._abort_connections()
        return drained

    def kill(self) -> None:
        """Die like a killed process: close the listener and reset every connection at once."""
        if self._loop is None:
            return
        if _running_loop() is self._loop:
            self._kill_now()
        else:
            _run_on(self._loop, _call_async(self._kill_now))

    def _kill_now(self) -> None:
        self._stopping = True
        self._batch.cut = True
        if self._listener is not None:
            self._listener.close()
        self._abort_connections()

    def _abort_connections(self) -> None:
        for connection in self._http.connections if self._http else []:
            transport = connection.transport
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:  # close with RST, as a dead peer's kernel answers, not a clean FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    async def _wait_no_connections(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._no_connections.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _connection_opened(self) -> None:
        self._connections += 1
        self._no_connections.clear()

    def _connection_closed(self) -> None:
        self._connections -= 1
        if self._connections == 0:
            self._no_connections.set()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        self._busy[connection] = self._busy.get(connection, 0) + 1
        try:
            response = await self._route(request)
        except RequestError as e:
            response = _error_response(e)
        finally:
            if self._busy[connection] == 1:
                del self._busy[connection]
            else:
                self._busy[connection] -= 1
        if self._stopping:
            response.force_close()
        return response

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        path, model = request.path, self.config.model
        if request.method == "GET" and path == "/health":
            return web.Response(body=b"", content_type="text/plain")
        if request.method == "GET" and path == "/metrics":
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": TEXT_FORMAT})
        if request.method == "GET" and path == "/v1/models":
            return _json_response(200, models_listing(model))
        if request.method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            raise RequestError(404, f"no route {path}")
        chat = path == "/v1/chat/completions"
        body = await _read_json(request)
        max_tokens = requested_tokens(body, model, chat)
        stream, include_usage = stream_options(body)
        prompt = prompt_of(body, chat, self.config.block_tokens)
        generation = self._batch.submit(max_tokens, stream, prompt)
        try:
            if stream:
                return await _stream(
                    request, generation, _StreamFormat(model, body, max_tokens, chat, include_usage)
                )
            while generation.held:
                await generation.progress()
            if generation.state is _State.CUT:
                raise RequestError(503, "the engine shut down before the request finished")
            return _json_response(200, completion(model, body, max_tokens, chat))
        finally:
            self._batch.release(generation)


async def _stream(
    request: web.BaseRequest, generation: _Request, chunks: _StreamFormat
) -> web.StreamResponse:
    """Write each token as an SSE event when the clock produces it; headers go with the first one."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    if request.version >= (1, 1):
        response.enable_chunked_encoding()  # the framing the clock's pushes use; HTTP/1.0 ends at close
    while True:
        if generation.produced > generation.sent:
            data = chunks.tokens(generation.sent, generation.produced)
            generation.sent = generation.produced
            if not response.prepared:
                await response.prepare(request)
            await response.write(data)
            if response.chunked and generation.chunks is None:
                generation.transport, generation.chunks = request.transport, chunks
        if generation.state is _State.DONE and generation.sent == generation.max_tokens:
            break
        if generation.state is _State.CUT:
            if not response.prepared:
                raise RequestError(503, "the engine shut down before the request started")
            await response.write(chunks.error("the engine shut down before the request finished"))
            break
        await generation.progress()
    await response.write_eof()
    return response


_MARK = "\x00token\x00"


class _StreamFormat:
    """OpenAI's streamed chunks of one request: chat.completion.chunk deltas or text_completion."""

    def __init__(self, model: str, body: dict[str, Any], max_tokens: int, chat: bool, usage: bool) -> None:
        self.chat = chat
        self.max_tokens = max_tokens
        self.usage = usage_of(body, max_tokens, chat) if usage else None
        self.base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        # Most chunks differ only in their text: format them from a template, not json.dumps each.
        before, after = _event(self._chunk(_MARK, None, role=False)).split(json.dumps(_MARK))
        self._before, self._after = before, after

    def _chunk(self, text: str, finish: str | None, role: bool) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": text} if role else {"content": text}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self.base, "choices": [choice]}

    def tokens(self, start: int, end: int) -> bytes:
        """The events of tokens start..end-1; after the last one, the usage chunk and [DONE]."""
        last = self.max_tokens - 1
        parts = []
        for i in range(start, end):
            text = f" tok{i}" if i else "tok0"
            if i in (0, last):
                parts.append(_event(self._chunk(text, "length" if i == last else None, role=i == 0)))
            else:
                parts.append(f'{self._before}"{text}"{self._after}')
        if end == self.max_tokens:
            if self.usage is not None:
                parts.append(_event({**self.base, "choices": [], "usage": self.usage}))
            parts.append("data: [DONE]\n\n")
        return "".join(parts).encode()

    def error(self, message: str) -> bytes:
        error = {"message": message, "type": "ServiceUnavailableError", "param": None, "code": 503}
        return _event({"error": error}).encode()


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _read_json(request: web.BaseRequest) -> dict[str, Any]:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as e:
        raise RequestError(400, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    return body


def _error_response(error: RequestError) -> web.Response:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(error.status, "ServiceUnavailableError")
    return _json_response(
        error.status,
        {"object": "error", "message": str(error), "type": kind, "param": None, "code": error.status},
    )


def _json_response(status: int, payload: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")


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
        return [running, waiting, success, *self._prefix_cache(counts, model)]

    def _prefix_cache(self, counts: Counts, model: str) -> list[Metric]:
        queries = CounterMetricFamily(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of tokens.", labels=["model_name"]
        )
        queries.add_metric([model], counts.prompt_tokens)
        hits = CounterMetricFamily(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of tokens.", labels=["model_name"]
        )
        hits.add_metric([model], counts.prefix_hit_tokens)
        usage = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels=["model_name"]
        )
        usage.add_metric([model], counts.kv_usage)  # running requests' blocks; cached ones are evictable
        return [queries, hits, usage]


def requested_tokens(body: dict[str, Any], model: str, chat: bool) -> int:
    """The tokens to generate for a request `body`, or RequestError when the engine refuses it."""
    if body.get("model") not in (None, model):
        raise RequestError(404, f"The model `{body['model']}` does not exist.")
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    value = next((body[n] for n in names if body.get(n) is not None), DEFAULT_MAX_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise RequestError(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    return value


def stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) of a request, refused as OpenAI and vLLM refuse them."""
    stream, options = body.get("stream") or False, body.get("stream_options")
    if not isinstance(stream, bool):
        raise RequestError(400, "stream must be a boolean")
    if options is not None and not stream:
        raise RequestError(400, "stream_options can only be given when stream is true")
    if options is not None and not isinstance(options, dict):
        raise RequestError(400, "stream_options must be an object")
    return stream, bool(options and options.get("include_usage"))


def prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Words (a token id is one) in the prompt: a stand-in for a tokenizer."""
    if chat:
        messages = body.get("messages")
        texts = (
            [m.get("content") for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        )
        return sum(len(t.split()) for t in texts if isinstance(t, str))
    return len(prompt_words(body, chat=False))


def usage_of(body: dict[str, Any], max_tokens: int, chat: bool) -> dict[str, int]:
    prompt = prompt_tokens(body, chat)
    return {"prompt_tokens": prompt, "completion_tokens": max_tokens, "total_tokens": prompt + max_tokens}


def completion(model: str, body: dict[str, Any], max_tokens: int, chat: bool) -> dict[str, Any]:
    text = " ".join(f"tok{i}" for i in range(max_tokens))
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{**choice, "finish_reason": "length"}],
        "usage": usage_of(body, max_tokens, chat),
    }


def models_listing(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": int(time.time()), "owned_by": "inferfleet-sim"}],
    }


_shared: asyncio.AbstractEventLoop | None = None
_shared_lock = threading.Lock()


def shared_loop() -> asyncio.AbstractEventLoop:
    """The one background event loop that hosts every engine of this process started with `.start()`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = asyncio.new_event_loop()
            threading.Thread(target=_shared.run_forever, name="sim-engines", daemon=True).start()
        return _shared


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _run_on(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    if _running_loop() is loop:
        coroutine.close()
        raise RuntimeError("called from the engine's own loop: await the *_async method instead")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


async def _call_async(function: Callable[[], None]) -> None:
    function()


def serve(config: EngineConfig) -> int:
    """Run until SIGTERM or SIGINT, then drain and stop (the `inferfleet sim-engine` command)."""
    return asyncio.run(_serve(config))


async def _serve(config: EngineConfig) -> int:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    engine = await SimEngine(config).start_async()
    print(
        f"sim-engine: model {config.model} listening on {engine.url} "
        f"({config.max_concurrent} concurrent, {config.tokens_per_second:g} tokens/s)",
        flush=True,
    )
    await stop_requested.wait()
    print(f"sim-engine: stopping, draining for up to {config.drain_seconds:g}s", flush=True)
    drained = await engine.stop_async()
    print(
        f"sim-engine: stopped ({'drained' if drained else 'cut requests after the drain'}; "
        f"{engine.counts().succeeded} requests served)",
        flush=True,
    )
    return 0
