"""The gateway's HTTP/1.x server: asyncio protocols parsed by httptools, one task per request.

aiohttp's server cost 145 µs of CPU a request where a bare protocol on httptools cost 32, with the
same trivial handler (bench/gateway/front_overhead.py), and the gateway's whole request costs
~400. The front needs little of a web framework: two POST routes and a GET. What it keeps of one:
- a handler is cancelled when its client goes (a queued request leaves the queue, a stream's engine
  connection is closed and its slot freed);
- a body over the limit is refused with 413, before it is read when its length is announced;
- `Expect: 100-continue` (curl sends it for bodies over 1 KiB);
- HTTP/1.0: whole answers, and streams that end when the connection closes;
- pipelined requests, answered in order; kept-alive connections closed after an idle time;
- on shutdown, no new connection, and the requests in flight finish within a bound.
A streamed answer's chunks are written straight to the transport (`Exchange.push`), from the
engine connection's callback (gateway/upstream.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote

import httptools

from inferfleet.gateway.chunked import PUSH_BUFFER_LIMIT, push_chunk

log = logging.getLogger("inferfleet.gateway")

REASONS = {status.value: status.phrase for status in HTTPStatus}
LINGER_SECONDS = 2.0
"""How long a refused connection still reads (and drops) what its client sends: closed with data
unread, the kernel resets it, and the client may lose the refusal before reading it."""
PIPELINE_LIMIT = 16
"""Requests read ahead on one connection before it stops reading until they are answered."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    """Percent-decoded, without the query."""
    version: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    keep_alive: bool


Handler = Callable[["Exchange"], Awaitable[None]]
Refusal = Callable[[int, str], bytes]
"""An answer's body for a status and message: the server's own refusals (400, 413, 500)."""


class Exchange:
    """One request and its answer: whole (`reply`) or streamed (`open_stream`, `push` or `write`,
    `end_stream`)."""

    __slots__ = ("chunked", "connection", "request", "status")

    def __init__(self, connection: FrontConnection, request: Request) -> None:
        self.connection = connection
        self.request = request
        self.status = 0
        """The answer's status once its head was written; 0 before."""
        self.chunked = False

    @property
    def client_gone(self) -> bool:
        return self.connection.closed or self.connection.transport.is_closing()

    def reply(
        self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        fields = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        if self.request.method == "HEAD":
            body = b""
        self._send_head(status, fields, body)

    def open_stream(self, status: int, first: bytes) -> None:
        """The head and the first piece in one write: the client needs both, and a write of its own
        for the head costs a syscall here and a read there."""
        self.chunked = self.request.version == "1.1"
        if not self.chunked:
            self.connection.keep_alive = False  # HTTP/1.0 has no chunks: the stream ends at close
        fields = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        if self.chunked:
            fields.append(("Transfer-Encoding", "chunked"))
        self._send_head(status, fields, self._frame(first))

    def push(self, data: bytes) -> bool:
        """Write `data` now, or False when the client is gone or holds too much unsent."""
        transport = self.connection.transport
        if self.chunked:
            return push_chunk(transport, data)
        if transport.is_closing() or transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT:
            return False
        transport.write(data)
        return True

    async def write(self, data: bytes) -> None:
        """Write `data` and wait until the client takes it; ConnectionResetError when it is gone."""
        if self.client_gone:
            raise ConnectionResetError("the client closed the connection")
        self.connection.transport.write(self._frame(data))
        await self.connection.drain()

    def end_stream(self) -> None:
        if self.chunked and not self.client_gone:
            self.connection.transport.write(b"0\r\n\r\n")

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def _send_head(self, status: int, fields: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        connection = self.connection
        keep_alive = self.request.keep_alive and connection.keep_alive and not connection.server.closing
        if not keep_alive:
            fields.append(("Connection", "close"))
        elif self.request.version == "1.0":
            fields.append(("Connection", "keep-alive"))
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", f"Date: {_http_date()}"]
        lines.extend(f"{name}: {value}" for name, value in fields)
        if not self.client_gone:
            connection.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


class _RefusalError(Exception):
    """Raised from a parser callback: answer `status` with `message` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FrontConnection(asyncio.Protocol):
    """One client connection; httptools calls the on_* methods as it parses."""

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.keep_alive = True
        self.idle_since = self.loop.time()
        self.task: asyncio.Task[None] | None = None
        self._pending: deque[Request] = deque()
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._upgrading: tuple[Request, int] | None = None
        """A request that asked for an Upgrade, and its body's length, while its body is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.task is not None:
            self.task.cancel()  # the client went: its request, queued or running, goes too
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        if self._paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def data_received(self, data: bytes) -> None:
        if self._upgrading is not None:
            self._read_upgrading_body(data)
        if not self.keep_alive:  # refused, or read up to a last request: nothing more is parsed
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            refused = e.__context__
            if not isinstance(refused, _RefusalError):
                raise
            self._refuse(refused.status, str(refused))
        except httptools.HttpParserUpgrade as e:
            # An Upgrade (curl --http2 asks for h2c) is declined by answering in HTTP/1.1, which
            # the RFC allows; the parser stops at the end of the head, so a body is read here,
            # and the connection closes after the answer.
            self.keep_alive = False
            if self._upgrading is not None:
                self._read_upgrading_body(data[int(e.args[0]) :])
        except httptools.HttpParserError as e:
            self._refuse(400, f"The request is not valid HTTP/1.1: {e}")

    def _read_upgrading_body(self, data: bytes) -> None:
        request, length = self._upgrading or (None, 0)
        assert request is not None
        request.body += data[: length - len(request.body)]
        if len(request.body) == length:
            self._upgrading = None
            self._enqueue(request)

    def _refuse(self, status: int, message: str) -> None:
        """Answer the server's own refusal and close: what follows on this connection is not
        parsed (a body not taken, a stream out of step), only drained for a moment."""
        self.keep_alive = False
        self._pending.clear()
        if self.task is None:
            request = Request("POST", "", "1.1", {}, b"", keep_alive=False)
            Exchange(self, request).reply(status, self.server.refusal(status, message), "application/json")
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version == "1.1" and "host" not in self._headers:
            raise _RefusalError(400, "An HTTP/1.1 request must name its Host.")
        length = self._headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.server.max_body_bytes:
            raise _RefusalError(413, f"The body is over {self.server.max_body_bytes} bytes.")
        if version == "1.1" and self._headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            raise _RefusalError(413, f"The body is over {self.server.max_body_bytes} bytes.")
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.partition(b"?")[0].decode("latin-1")
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            path=unquote(path) if "%" in path else path,
            version=self.parser.get_http_version(),
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self.parser.should_keep_alive(),
        )
        length = self._headers.get("content-length", "0")
        if "upgrade" in self._headers and not request.body and length.isdigit() and int(length):
            self._upgrading = (request, int(length))
        else:
            self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        self._pending.append(request)
        if self.task is None:
            self._answer_next()
        elif len(self._pending) >= PIPELINE_LIMIT:
            self.transport.pause_reading()

    def _answer_next(self) -> None:
        exchange = Exchange(self, self._pending.popleft())
        self.task = self.loop.create_task(self._answer(exchange))

    async def _answer(self, exchange: Exchange) -> None:
        try:
            await self.server.handler(exchange)
        except asyncio.CancelledError:
            return  # its client is gone
        except Exception:
            log.exception("answering %s %s", exchange.request.method, exchange.request.path)
            if exchange.status == 0:
                exchange.reply(500, self.server.refusal(500, "The gateway failed."), "application/json")
            else:
                self.keep_alive = False  # a broken stream: the client sees the connection end
        self.task = None
        self._after(exchange)

    def _after(self, exchange: Exchange) -> None:
        if self.closed:
            return
        if not (exchange.request.keep_alive and self.keep_alive) or (
            self.server.closing and not self._pending
        ):
            self.transport.close()
        elif self._pending:
            self._answer_next()
        else:
            self.idle_since = self.loop.time()
            self.transport.resume_reading()


class FrontServer:
    """Listens, keeps track of its connections, closes the idle ones, and shuts down gently."""

    def __init__(
        self,
        handler: Handler,
        refusal: Refusal,
        max_body_bytes: int,
        keepalive_seconds: float = 75.0,
    ) -> None:
        self.handler, self.refusal, self.max_body_bytes = handler, refusal, max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self.loop = asyncio.get_running_loop()
        self.connections: set[FrontConnection] = set()
        self.closing = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sweep: asyncio.TimerHandle | None = None

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> None:
        self._server = await self.loop.create_server(
            lambda: FrontConnection(self), host, port, backlog=1024, reuse_port=reuse_port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        """The bound port, useful when asked for 0."""
        self._sweep = self.loop.call_later(self.keepalive_seconds / 4, self._close_idle)

    def _close_idle(self) -> None:
        cutoff = self.loop.time() - self.keepalive_seconds
        for connection in [c for c in self.connections if c.task is None and c.idle_since < cutoff]:
            connection.transport.close()
        self._sweep = self.loop.call_later(self.keepalive_seconds / 4, self._close_idle)

    async def shutdown(self, timeout: float) -> None:
        """Take no new connection, close the idle ones, let requests in flight finish for up to
        `timeout` seconds (each connection closes after its answer), then close what is left."""
        self.closing = True
        if self._sweep is not None:
            self._sweep.cancel()
        if self._server is not None:
            self._server.close()
        for connection in [c for c in self.connections if c.task is None]:
            connection.transport.close()
        deadline = self.loop.time() + timeout
        while busy := [c.task for c in self.connections if c.task is not None]:
            if self.loop.time() >= deadline:
                break
            await asyncio.wait(busy, timeout=deadline - self.loop.time())
        for connection in list(self.connections):
            connection.transport.close()
