"""HTTP/1.1 to the engines on asyncio protocols, parsed by httptools, with kept-alive connections.

aiohttp's client hands a streamed body to a coroutine one piece at a time, a future and a task
step per piece, and the server's writer costs another per write: 22 µs of the gateway's CPU per
chunk at 1,000 streams (bench/gateway). Here the connection's own callback can write each piece
straight to the client's socket (`Answer.relay`); only a client too slow to take it wakes the
handler, and this connection reads nothing more until that client caught up.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

import httptools

Push = Callable[[bytes], bool]
"""Takes a piece now and says True, or says False: the piece must wait for the handler."""


def address_of(url: str) -> str:
    """The `host:port` an engine client connects to, from an `http://host:port[/]` URL."""
    return url.strip().removeprefix("http://").rstrip("/")


class UpstreamError(Exception):
    """No whole answer: `reason` is "connect", "timeout" (connecting) or "reset" (broken after)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Answer:
    """One response as it arrives: `head` resolves after its headers, `done` after its last byte."""

    def __init__(self, connection: _Connection) -> None:
        loop = connection.loop
        self.connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}
        """Header names in lower case."""
        self.head: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._pieces: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._push: Push | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body; UpstreamError when the connection broke first."""
        await self.done
        return b"".join(self._pieces)

    async def next_piece(self) -> bytes | None:
        """The next piece of the body as it came off the socket; None after the last."""
        while not self._pieces:
            if self.done.done():
                self.done.result()
                return None
            await self._wait()
        return self._pieces.popleft()

    async def relay(self, push: Push, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Every later piece to `push`, from the connection's callback, until the end; a piece it
        refuses goes through `write` (which may wait for the client) while the connection waits."""
        transport = self.connection.transport
        while True:
            while self._pieces:
                await write(self._pieces.popleft())
            if self.done.done():
                self.done.result()
                return
            self._push = push
            transport.resume_reading()
            try:
                await self._wait()
            finally:
                self._push = None

    def _feed(self, data: bytes) -> None:
        if self._push is not None:
            if self._push(data):
                return
            self._push = None
            self.connection.transport.pause_reading()
        self._pieces.append(data)
        self._wake()

    def _finish(self, error: UpstreamError | None = None) -> None:
        for future in (self.head, self.done):
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
                future.add_done_callback(_retrieved)  # nobody may ask the head of a broken stream
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self.connection.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


def _retrieved(future: asyncio.Future[None]) -> None:
    future.exception()


class _Connection(asyncio.Protocol):
    """One connection to an engine, one request at a time; httptools calls the on_* methods."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        self.loop, self.address = loop, address
        self.transport: asyncio.Transport
        self.parser = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.on_lost: Callable[[_Connection], None] | None = None
        """Set while the connection waits in its client's idle pool."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # nothing asked: an engine that talks out of turn is not reused
            self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.answer._finish(UpstreamError("reset", f"{self.address} sent a malformed answer: {e}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        if self.answer is not None and not self.answer.done.done():
            self.answer._finish(UpstreamError("reset", f"{self.address} closed the connection"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.answer is not None:
            self.answer.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.answer is not None:
            self.answer.status = self.parser.get_status_code()
            self.answer.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.answer is not None:
            self.answer._feed(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.answer is not None:
            self.answer._finish()


class EngineClient:
    """POSTs to engines at "host:port", reusing connections whose last answer was read whole."""

    def __init__(self, connect_timeout: float | None = None, keepalive_seconds: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive_seconds = keepalive_seconds
        self._idle: dict[str, list[_Connection]] = defaultdict(list)
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def post(self, address: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Send the request; the answer arrives on the returned Answer. Raises UpstreamError when
        no connection could be made. Every Answer must be given back with `release`."""
        request = _request(address, path, headers, body)
        connection = self._take_idle(address) or await self._connect(address)
        answer = connection.answer = Answer(connection)
        connection.transport.write(request)
        return answer

    def release(self, answer: Answer) -> None:
        """Keep the connection for the next request if its answer was read whole, else close it
        (an engine streaming to nobody sees its client go and stops generating)."""
        connection = answer.connection
        connection.answer = None
        whole = answer.done.done() and answer.done.exception() is None
        if whole and connection.keep_alive and not connection.closed:
            connection.transport.resume_reading()
            self._keep(connection)
        else:
            connection.transport.close()

    def _keep(self, connection: _Connection) -> None:
        connection.idle_since = connection.loop.time()
        connection.on_lost = self._forget
        self._idle[connection.address].append(connection)
        if self._sweep is None:
            self._sweep = connection.loop.call_later(self.keepalive_seconds, self._close_stale)

    def _forget(self, connection: _Connection) -> None:
        """A connection closed while idle leaves the pool (a replica gone leaves nothing behind)."""
        connection.on_lost = None
        idle = self._idle.get(connection.address)
        if idle is not None and connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[connection.address]

    def _stale(self, connection: _Connection) -> bool:
        return connection.loop.time() - connection.idle_since >= self.keepalive_seconds

    def _close_stale(self) -> None:
        self._sweep = None
        loop = asyncio.get_running_loop()
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if self._stale(c)]:
                self._forget(connection)
                connection.transport.close()
        if self._idle:
            self._sweep = loop.call_later(self.keepalive_seconds, self._close_stale)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connections in list(self._idle.values()):
            for connection in list(connections):
                self._forget(connection)
                connection.transport.close()

    def _take_idle(self, address: str) -> _Connection | None:
        idle = self._idle.get(address, [])
        found = None
        while idle and found is None:
            connection = idle.pop()  # the most recently used: the least likely to have been closed
            connection.on_lost = None
            if (
                not self._stale(connection)
                and not connection.closed
                and not connection.transport.is_closing()
            ):
                found = connection
            else:
                connection.transport.close()
        if not idle:
            self._idle.pop(address, None)
        return found

    async def _connect(self, address: str) -> _Connection:
        loop = asyncio.get_running_loop()
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, address), host, int(port)
                )
        except TimeoutError as e:
            raise UpstreamError("timeout", f"connecting to {address}") from e
        except (OSError, ValueError) as e:
            raise UpstreamError("connect", f"{address}: {e}") from e
        return connection


def _request(address: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    fields = {"Host": address, "Content-Length": str(len(body)), **headers}
    if any(c in text for field in fields.items() for text in field for c in "\r\n"):
        raise ValueError("a header with a line break")
    lines = [f"POST {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
