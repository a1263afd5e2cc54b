"""The gateway's HTTP front on raw sockets: what any HTTP/1.x client may send, and what it gets back.

The official clients are in tests/unit/test_gateway_http.py; here the bytes on the wire: refusals
in OpenAI's error shape, the body limit, HTTP/1.0, pipelining, `Expect: 100-continue`, scopes.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from inferfleet.gateway.front_server import MAX_HEAD_BYTES, FrontServer
from inferfleet.gateway.http1 import Exchange
from inferfleet.gateway.server import MAX_BODY_BYTES, refusal_body
from inferfleet.sim.engine import SimEngine
from tests.unit.test_gateway_http import MODEL, gateway, route, wait_until

pytestmark = pytest.mark.unit


def _post(path: str, body: bytes, version: str = "1.1", headers: str = "") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: gw\r\nContent-Type: application/json\r\n{headers}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _completion(max_tokens: int, stream: bool = False) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "x", "max_tokens": max_tokens, "stream": stream}).encode()


async def _talk(url: str, *writes: bytes) -> bytes:
    """Send `writes` on one connection and read until the gateway closes it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for data in writes:
        writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            return await reader.read(-1)
    finally:
        writer.close()


def _split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and raw body of one answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _openai_error(body: bytes) -> dict[str, Any]:
    error = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "code"}
    return dict(error)


def test_unknown_paths_and_wrong_methods_are_openai_errors(start_engine: Callable[..., SimEngine]) -> None:
    async def scenario() -> None:
        async with gateway(route(), start_engine()) as url:
            status, headers, body = _split(
                await _talk(url, b"GET /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            )
            assert (status, headers["allow"]) == (405, "POST")
            assert _openai_error(body)["type"] == "invalid_request_error"
            status, _, body = _split(
                await _talk(url, b"GET /v2/anything HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            )
            assert status == 404
            assert _openai_error(body)["code"] == "not_found"
            status, _, body = _split(
                await _talk(url, _post("/v1/completions", b"{nope", headers="Connection: close\r\n"))
            )
            assert status == 400
            assert "not valid JSON" in _openai_error(body)["message"]

    asyncio.run(scenario())


def test_a_body_over_the_limit_is_refused_with_413(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine()

    async def scenario() -> None:
        async with gateway(route(), engine) as url:
            status, _, body = _split(await _talk(url, _post("/v1/completions", b" " * (MAX_BODY_BYTES + 1))))
            assert status == 413
            assert _openai_error(body)["type"] == "invalid_request_error"
            # announced too large: refused before the client sends it
            head = _post("/v1/completions", b"", headers="Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {MAX_BODY_BYTES + 1}".encode()
            )
            status, _, _ = _split(await _talk(url, head))
            assert status == 413
            assert engine.counts().succeeded == 0

    asyncio.run(scenario())


def test_malformed_http_is_a_400_and_the_connection_closes(start_engine: Callable[..., SimEngine]) -> None:
    async def scenario() -> None:
        async with gateway(route(), start_engine()) as url:
            status, _, _ = _split(await _talk(url, b"NOT HTTP AT ALL\r\n\r\n"))  # read to EOF: closed
            assert status == 400

    asyncio.run(scenario())


def test_expect_100_continue_is_answered_before_the_body(start_engine: Callable[..., SimEngine]) -> None:
    """curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for it."""

    async def scenario() -> None:
        async with gateway(route(), start_engine(tokens_per_second=500)) as url:
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            body = _completion(2)
            request = _post("/v1/completions", body, headers="Expect: 100-continue\r\nConnection: close\r\n")
            writer.write(request[: -len(body)])
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
            writer.write(body)
            async with asyncio.timeout(10):
                status, _, answer = _split(await reader.read(-1))
            writer.close()
            assert status == 200
            assert json.loads(answer)["choices"][0]["text"] == "tok0 tok1"

    asyncio.run(scenario())


def test_an_upgrade_is_declined_and_the_request_answered_over_http_1_1(
    start_engine: Callable[..., SimEngine],
) -> None:
    """`curl --http2` on http:// asks for h2c; the gateway speaks HTTP/1.1 and says so by answering."""

    async def scenario() -> None:
        async with gateway(route(), start_engine(tokens_per_second=500)) as url:
            upgrade = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
            status, headers, body = _split(
                await _talk(url, _post("/v1/completions", _completion(2), headers=upgrade))
            )
            assert (status, headers["connection"]) == (200, "close"), body
            assert json.loads(body)["choices"][0]["text"] == "tok0 tok1"

    asyncio.run(scenario())


def test_pipelined_requests_are_answered_in_order(start_engine: Callable[..., SimEngine]) -> None:
    async def scenario() -> None:
        async with gateway(route(), start_engine(tokens_per_second=500)) as url:
            raw = await _talk(
                url,
                _post("/v1/completions", _completion(3))
                + _post("/v1/completions", _completion(1), headers="Connection: close\r\n"),
            )
            first, rest = raw.split(b"HTTP/1.1 ", 2)[1:]
            status, headers, body = _split(b"HTTP/1.1 " + first)
            assert status == 200
            assert (
                json.loads(body[: int(headers["content-length"])])["choices"][0]["text"] == "tok0 tok1 tok2"
            )
            status, _, body = _split(b"HTTP/1.1 " + rest)
            assert (status, json.loads(body)["choices"][0]["text"]) == (200, "tok0")

    asyncio.run(scenario())


def test_http_1_0_gets_whole_answers_and_streams_that_end_at_close(
    start_engine: Callable[..., SimEngine],
) -> None:
    async def scenario() -> None:
        async with gateway(route(), start_engine(tokens_per_second=500)) as url:
            status, headers, body = _split(await _talk(url, _post("/v1/completions", _completion(2), "1.0")))
            assert (status, int(headers["content-length"])) == (200, len(body))
            status, headers, body = _split(
                await _talk(url, _post("/v1/completions", _completion(3, True), "1.0"))
            )
            assert status == 200
            assert "transfer-encoding" not in headers  # HTTP/1.0 has no chunks: the stream ends at close
            events = [line for line in body.decode().split("\n\n") if line]
            assert events[-1] == "data: [DONE]"
            assert len(events) == 4

    asyncio.run(scenario())


def test_models_are_listed_in_the_scope_of_the_path(start_engine: Callable[..., SimEngine]) -> None:
    async def models(url: str, path: str) -> list[str]:
        status, _, body = _split(
            await _talk(url, f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
        )
        assert status == 200
        return [m["id"] for m in json.loads(body)["data"]]

    async def scenario() -> None:
        async with gateway(route(), start_engine()) as url:
            assert await models(url, "/v1/models") == [MODEL]
            assert await models(url, "/namespaces/ns/v1/models") == [MODEL]
            assert await models(url, "/namespaces/ns/services/svc/v1/models") == [MODEL]
            assert await models(url, "/namespaces/other/v1/models") == []

    asyncio.run(scenario())


class _Recorder:
    """A handler for the server alone: answers each path, `/slow` once `release` is set, `/stream`
    as two events around `go`, and records what it was asked."""

    def __init__(self, answer: bytes = b"ok") -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.release = asyncio.Event()
        self.go = asyncio.Event()

    async def __call__(self, exchange: Exchange) -> None:
        self.asked.append(exchange.request.path)
        if exchange.request.path == "/slow":
            await self.release.wait()
        if exchange.request.path == "/stream":
            exchange.open_stream(200, b"data: 1\n\n")
            await self.go.wait()
            await exchange.write(b"data: 2\n\n")
            exchange.end_stream()
            return
        body = self.answer if exchange.request.path != "/echo" else b"got %d" % len(exchange.request.body)
        exchange.reply(200, body, "text/plain")


@asynccontextmanager
async def serving(handler: _Recorder, **settings: Any) -> AsyncIterator[FrontServer]:
    server = FrontServer(handler, refusal_body, settings.pop("max_body_bytes", 1024), **settings)
    await server.listen("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.shutdown(timeout=1)


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n".encode()


def _statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_a_refusal_comes_after_the_requests_read_before_it() -> None:
    async def scenario() -> None:
        handler = _Recorder()
        async with serving(handler) as server:
            too_large = b"POST /c HTTP/1.1\r\nHost: gw\r\nContent-Length: 999999\r\n\r\n"
            talk = asyncio.ensure_future(
                _talk(f"http://127.0.0.1:{server.port}", _get("/slow") + _get("/b") + too_large)
            )
            await wait_until(lambda: handler.asked == ["/slow"])
            handler.release.set()
            raw = await talk
        assert _statuses(raw) == [200, 200, 413]
        assert handler.asked == ["/slow", "/b"]

    asyncio.run(scenario())


def test_a_client_that_never_reads_gets_no_more_answers_made_for_it() -> None:
    """Pipelined requests from a client that reads nothing: the server stops at the first answer
    the client does not take, instead of making and holding every answer."""

    async def scenario() -> None:
        answer = b"x" * 65536
        handler = _Recorder(answer)
        async with serving(handler) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            await asyncio.get_running_loop().sock_sendall(sock, _get("/models") * 2000)  # 128 MiB of answers
            await wait_until(lambda: len(server.connections) == 1)
            [connection] = server.connections
            # its answer task waits for the client to take what it holds
            await wait_until(lambda: connection._paused and connection.task is not None)
            held = connection.transport.get_write_buffer_size()
            assert held <= 2 * len(answer) + 4096
            assert len(handler.asked) < 2000
            sock.close()

    asyncio.run(scenario())


def test_a_head_over_the_limit_is_refused_with_431() -> None:
    async def scenario() -> None:
        async with serving(_Recorder()) as server:
            head = b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (2 * MAX_HEAD_BYTES)
            raw = await _talk(f"http://127.0.0.1:{server.port}", head)
        assert _statuses(raw) == [431]

    asyncio.run(scenario())


def test_100_continue_waits_for_the_answer_before_it() -> None:
    async def scenario() -> None:
        handler = _Recorder()
        async with serving(handler) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(_get("/stream"))
            await reader.readuntil(b"data: 1\n\n\r\n")
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
            )
            [connection] = server.connections
            await wait_until(lambda: connection.receiving)
            handler.go.set()
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"0\r\n\r\n")).endswith(b"data: 2\n\n\r\n0\r\n\r\n")
                assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
                writer.write(b"x")
                assert (await reader.readuntil(b"got 1")).startswith(b"HTTP/1.1 200 OK")
            writer.close()

    asyncio.run(scenario())


def test_an_upload_slower_than_the_idle_time_is_read_and_a_stalled_one_cut() -> None:
    async def scenario() -> None:
        async with serving(_Recorder(), keepalive_seconds=0.4) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\n")
            for _ in range(8):  # a byte every 0.15 s: 1.2 s in all, each gap under the idle time
                await asyncio.sleep(0.15)
                writer.write(b"x")
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"got 8")).startswith(b"HTTP/1.1 200 OK")
            writer.write(b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\nx")  # then silence
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # cut once silent for the idle time
            writer.close()

    asyncio.run(scenario())


def test_an_upgrade_pipelined_or_chunked_is_answered_in_http_1_1() -> None:
    upgrade = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"

    async def scenario() -> None:
        handler = _Recorder()
        async with serving(handler) as server:
            url = f"http://127.0.0.1:{server.port}"
            post = f"POST /echo HTTP/1.1\r\nHost: gw\r\n{upgrade}Content-Length: 2\r\n\r\n{{}}".encode()
            talk = asyncio.ensure_future(_talk(url, _get("/slow") + post))
            await wait_until(lambda: handler.asked == ["/slow"])
            handler.release.set()
            raw = await talk
            assert _statuses(raw) == [200, 200]
            assert raw.endswith(b"got 2")
            chunked = (
                f"POST /echo HTTP/1.1\r\nHost: gw\r\n{upgrade}Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}"
            )
            assert _statuses(await _talk(url, chunked.encode())) == [400]

    asyncio.run(scenario())


def test_idle_connections_close_and_shutdown_lets_requests_in_flight_finish() -> None:
    async def scenario() -> None:
        handler = _Recorder()
        async with serving(handler, keepalive_seconds=0.4) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(_get("/fast"))
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 OK")
                assert await reader.read() == b""  # kept alive, then closed once idle for 0.4 s
            writer.close()
            slow = asyncio.ensure_future(
                _talk(f"http://127.0.0.1:{server.port}", _get("/slow") + _get("/after"))
            )
            await wait_until(lambda: "/slow" in handler.asked)
            stopping = asyncio.ensure_future(server.shutdown(timeout=10))
            await wait_until(lambda: server.closing)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", server.port)
            handler.release.set()
            status, headers, body = _split(await slow)
            assert (status, headers["connection"], body) == (200, "close", b"ok")
            await stopping
        assert handler.asked == ["/fast", "/slow"]  # nothing after the last answer is processed

    asyncio.run(scenario())
