"""The gateway's HTTP/1.x server: asyncio protocols parsed by httptools, one task per request.

aiohttp's server cost 145 µs of CPU a request where a bare protocol on httptools cost 32, with the
same trivial handler (bench/gateway/front_overhead.py), and the gateway's whole request costs
~400. The front needs little of a web framework: two POST routes and a GET. What it keeps of one
(tests/unit/test_gateway_front.py):
- a handler is cancelled when its client goes (a queued request leaves the queue, a stream's engine
  connection is closed and its slot freed);
- memory per connection is bounded: the head (1 MiB, 100 fields: 431), the body (413, before it is
  read when its length is announced), one request read ahead of the one being answered, and an
  answer is taken by the client before the next is made;
- pipelined requests are answered in order, a refusal (malformed, too large) after the requests
  read before it, and nothing is processed after a request that asked to close;
- `Expect: 100-continue` (curl sends it for bodies over 1 KiB), in order with earlier answers;
- an Upgrade (curl --http2 asks for h2c) is declined by answering in HTTP/1.1;
- HTTP/1.0: whole answers, and streams that end when the connection closes;
- kept-alive connections idle (or a request stalled) for 75 s are closed;
- on shutdown, no new connection, and the requests in flight (or being received) finish within a
  bound; then every connection is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import cast
from urllib.parse import unquote

import httptools

from inferfleet.gateway.http1 import Exchange, Handler, Refusal, Request

log = logging.getLogger("inferfleet.gateway")

MAX_HEAD_BYTES = 1 << 20
"""Bytes read while a request's head is incomplete before it is refused (431)."""
MAX_HEADERS = 100
LINGER_SECONDS = 2.0
"""How long a refused connection still reads (and drops) what its client sends: closed with data
unread, the kernel resets it, and the client may lose the refusal before reading it."""


class _RefusalError(Exception):
    """Raised from a parser callback: answer `status` with `message`, then close."""

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
        self.task: asyncio.Task[None] | None = None
        self.idle_since = self.loop.time()
        """When it last answered, or received data: the idle sweep's clock."""
        self.receiving = False
        """A request has begun and is not read whole yet."""
        self._parsing = True
        """False once nothing more is read: after a refusal, an Upgrade, a request that asked to
        close, or a shutdown."""
        self._pending: deque[Request] = deque()
        self._refusal: tuple[int, bytes] | None = None
        """The server's own refusal (status, body), answered once the requests read before it are."""
        self._continue_owed = False
        self._upgrading: tuple[Request, bytearray, int] | None = None
        """A request that asked for an Upgrade, its body so far and its length: httptools stops
        at the end of such a head, so its body is read here."""
        self._head_bytes = 0
        self._in_head = True
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._drain: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pending.clear()
        self.server.forget(self)
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
        """Wait until the transport's buffer is below its high-water mark."""
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        if self._paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def closes_after(self, request: Request) -> bool:
        """Whether the answer to `request` must be this connection's last."""
        more = self._parsing or self._pending or self._upgrading is not None or self._refusal is not None
        return not request.keep_alive or self.server.closing or not more

    # Reading

    def data_received(self, data: bytes) -> None:
        self.idle_since = self.loop.time()
        if self._upgrading is not None:
            self._read_upgrading_body(data)
            return
        if not self._parsing:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"The request's head is over {MAX_HEAD_BYTES} bytes.")
                return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            refused = e.__context__
            if not isinstance(refused, _RefusalError):
                raise
            self._refuse(refused.status, str(refused))
        except httptools.HttpParserUpgrade as e:
            # The request is read (to the end of its head); it is answered in HTTP/1.1, which the
            # RFC allows, and the connection closes after it: the parser is spent.
            self._parsing = False
            if self._upgrading is not None:
                self._read_upgrading_body(data[int(e.args[0]) :])
        except httptools.HttpParserError as e:
            self._refuse(400, f"The request is not valid HTTP/1.1: {e}")

    def _read_upgrading_body(self, data: bytes) -> None:
        assert self._upgrading is not None
        request, body, length = self._upgrading
        body += data[: length - len(body)]
        if len(body) == length:
            self._upgrading = None
            self.receiving = False
            request.body = bytes(body)
            self._enqueue(request)

    def on_message_begin(self) -> None:
        self.receiving = True
        self._url, self._headers, self._body, self._size = [], {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= MAX_HEADERS:
            raise _RefusalError(431, f"The request has over {MAX_HEADERS} header fields.")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        check_head(self._headers, self.parser.get_http_version(), self.server.max_body_bytes)
        if self._headers.get("expect") is not None and self.parser.get_http_version() == "1.1":
            if self.task is None and not self._pending:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self._continue_owed = True  # after the answers before it: they are being written

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            raise _RefusalError(413, f"The body is over {self.server.max_body_bytes} bytes.")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        request = self._request()
        if not request.keep_alive:
            self._parsing = False  # nothing after a request that asked to close is processed
        length = int(self._headers.get("content-length") or 0)
        if self.parser.should_upgrade():
            if "chunked" in self._headers.get("transfer-encoding", "").lower():
                raise _RefusalError(400, "An Upgrade request's body must have a Content-Length.")
            self._parsing = False
            if length > len(request.body):
                self._upgrading = (request, bytearray(request.body), length)
                return
        self.receiving = False
        self._enqueue(request)

    def _request(self) -> Request:
        try:
            path = httptools.parse_url(b"".join(self._url)).path.decode("latin-1")  # absolute form too
        except httptools.HttpParserInvalidURLError as e:
            raise _RefusalError(400, f"The request's target is not a URL: {e}") from e
        return Request(
            method=self.parser.get_method().decode("latin-1"),
            path=unquote(path) if "%" in path else path,
            version=self.parser.get_http_version(),
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self.parser.should_keep_alive(),
        )

    # Answering

    def _enqueue(self, request: Request) -> None:
        self._pending.append(request)
        if self.task is None:
            self._answer_next()
        else:
            self.transport.pause_reading()  # one request read ahead at most: bodies stay bounded

    def _answer_next(self) -> None:
        exchange = Exchange(self, self._pending.popleft())
        self.task = self.loop.create_task(self._answer(exchange))

    async def _answer(self, exchange: Exchange) -> None:
        try:
            await self._run(exchange)
            await self.drain()  # taken by the client before the next answer is made
        except (asyncio.CancelledError, ConnectionResetError):
            return  # its client is gone
        finally:
            self.task = None
        self._next_or_close(exchange)

    async def _run(self, exchange: Exchange) -> None:
        try:
            await self.server.handler(exchange)
        except Exception:
            log.exception("answering %s %s", exchange.request.method, exchange.request.path)
            if exchange.status:
                exchange.closes = True  # a stream cut short: its end is the connection's
                return
        if exchange.status == 0:  # it failed, or answered nothing
            exchange.reply(500, self.server.refusal(500, "The gateway failed."), "application/json")

    def _next_or_close(self, exchange: Exchange) -> None:
        if self.closed or self.transport.is_closing():
            return
        if exchange.closes:
            self.transport.close()
        elif self._pending:
            self._answer_next()
        elif self._refusal is not None:
            self._send_refusal()
        else:
            self.idle_since = self.loop.time()
            if self._continue_owed:
                self._continue_owed = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.transport.resume_reading()

    def _refuse(self, status: int, message: str) -> None:
        self._parsing = False
        self._refusal = (status, self.server.refusal(status, message))
        if self.task is None and not self._pending:
            self._send_refusal()

    def _send_refusal(self) -> None:
        """Answer the refusal, then close: what follows on this connection is not parsed (a body
        not taken, a stream out of step), only drained for a moment."""
        assert self._refusal is not None
        (status, body), self._refusal = self._refusal, None
        request = Request("POST", "", "1.1", {}, b"", keep_alive=False)
        Exchange(self, request).reply(status, body, "application/json")
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def check_head(headers: dict[str, str], version: str, max_body_bytes: int) -> None:
    """Refuse (raise _RefusalError) a head the gateway cannot serve, before its body is read."""
    if version == "1.1" and "host" not in headers:
        raise _RefusalError(400, "An HTTP/1.1 request must name its Host.")
    length = headers.get("content-length", "0")
    if length.isdigit() and int(length) > max_body_bytes:
        raise _RefusalError(413, f"The body is over {max_body_bytes} bytes.")
    if headers.get("content-encoding", "identity").lower() != "identity":
        raise _RefusalError(415, "A compressed request body is not supported: send it as is.")
    expect = headers.get("expect")
    if expect is not None and expect.lower() != "100-continue":
        raise _RefusalError(417, f"Expect: {expect} is not supported.")


class FrontServer:
    """Listens, keeps track of its connections, closes the idle ones, and shuts down gently."""

    def __init__(
        self, handler: Handler, refusal: Refusal, max_body_bytes: int, keepalive_seconds: float = 75.0
    ) -> None:
        self.handler, self.refusal, self.max_body_bytes = handler, refusal, max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self.loop = asyncio.get_running_loop()
        self.connections: set[FrontConnection] = set()
        self.closing = False
        self.port = 0
        """The bound port, useful when asked for 0."""
        self._server: asyncio.Server | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._all_closed = asyncio.Event()

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> None:
        self._server = await self.loop.create_server(
            lambda: FrontConnection(self), host, port, backlog=1024, reuse_port=reuse_port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweep = self.loop.call_later(self.keepalive_seconds / 4, self._close_idle)

    def forget(self, connection: FrontConnection) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._all_closed.set()

    def _close_idle(self) -> None:
        """Close connections with nothing in flight and nothing received for the keep-alive time
        (an idle client, or one that stalled in the middle of sending a request)."""
        cutoff = self.loop.time() - self.keepalive_seconds
        for connection in [c for c in self.connections if c.task is None and c.idle_since < cutoff]:
            connection.transport.close()
        self._sweep = self.loop.call_later(self.keepalive_seconds / 4, self._close_idle)

    async def shutdown(self, timeout: float) -> None:
        """Take no new connection and close the idle ones; each busy one closes after its answer
        (its head says so). Past `timeout` seconds, cut what is left."""
        self.closing = True
        if self._sweep is not None:
            self._sweep.cancel()
        if self._server is not None:
            self._server.close()
        for connection in [c for c in self.connections if c.task is None and not c.receiving]:
            connection.transport.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout)
        for connection in list(self.connections):
            connection.transport.abort()
