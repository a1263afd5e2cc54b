"""One HTTP/1.x request and its answer, as the gateway's front server hands them to a handler.

The server is gateway/front_server.py (asyncio protocols parsed by httptools); an `Exchange` writes
the answer to its connection's transport: whole (`reply`), or streamed (`open_stream`, then each
piece by `push`, straight from the engine connection's callback, or by `write`, which waits for a
slow client, then `end_stream`). HTTP/1.1 streams are chunked; HTTP/1.0 ones end when the
connection closes.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from inferfleet.gateway.chunked import push_framed

if TYPE_CHECKING:
    from inferfleet.gateway.front_server import FrontConnection

REASONS = {status.value: status.phrase for status in HTTPStatus}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    """Percent-decoded, without the query (and without scheme and host in absolute form)."""
    version: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    keep_alive: bool


Handler = Callable[["Exchange"], Awaitable[None]]
Refusal = Callable[[int, str], bytes]
"""An answer's body for a status and message: the server's own refusals (400, 413, 500, ...)."""


class Exchange:
    """One request and its answer."""

    __slots__ = ("chunked", "closes", "connection", "request", "status")

    def __init__(self, connection: FrontConnection, request: Request) -> None:
        self.connection = connection
        self.request = request
        self.status = 0
        """The answer's status once its head was written; 0 before."""
        self.chunked = False
        self.closes = False
        """The connection closes after this answer (its head said so)."""

    @property
    def client_gone(self) -> bool:
        return self.connection.closed or self.connection.transport.is_closing()

    def reply(
        self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        fields = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        self._send_head(status, fields, b"" if self.request.method == "HEAD" else body)

    def open_stream(self, status: int, first: bytes) -> None:
        """The head and the first piece in one write: the client needs both, and a write of its own
        for the head costs a syscall here and a read there."""
        self.chunked = self.request.version == "1.1"
        self.closes = not self.chunked  # HTTP/1.0 has no chunks: the stream ends at close
        fields = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        if self.chunked:
            fields.append(("Transfer-Encoding", "chunked"))
        self._send_head(status, fields, self._frame(first))

    def push(self, data: bytes) -> bool:
        """Write `data` now, or False when the client is gone or holds too much unsent."""
        if not data:
            return True  # an empty chunk would end the stream
        return push_framed(self.connection.transport, self._frame(data))

    async def write(self, data: bytes) -> None:
        """Write `data` and wait until the client takes it: ConnectionResetError when it is gone
        already, the handler's cancellation when it goes meanwhile."""
        if self.client_gone:
            raise ConnectionResetError("the client closed the connection")
        if data:
            self.connection.transport.write(self._frame(data))
        await self.connection.drain()

    def end_stream(self) -> None:
        if self.chunked and not self.client_gone:
            self.connection.transport.write(b"0\r\n\r\n")

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def _send_head(self, status: int, fields: list[tuple[str, str]], body: bytes) -> None:
        if any("\r" in value or "\n" in value for _, value in fields):
            raise ValueError(f"a response header with a line break: {fields}")
        self.status = status
        self.closes = self.closes or self.connection.closes_after(self.request)
        if self.closes:
            fields.append(("Connection", "close"))
        elif self.request.version == "1.0":
            fields.append(("Connection", "keep-alive"))
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", f"Date: {_http_date()}"]
        lines.extend(f"{name}: {value}" for name, value in fields)
        if not self.client_gone:
            self.connection.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]
