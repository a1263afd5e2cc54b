"""The gateway's HTTP front on raw sockets: what any HTTP/1.x client may send, and what it gets back.

The official clients are in tests/unit/test_gateway_http.py; here the bytes on the wire: refusals
in OpenAI's error shape, the body limit, HTTP/1.0, pipelining, `Expect: 100-continue`, scopes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from inferfleet.gateway.http1 import Exchange, FrontServer
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


def test_idle_connections_close_and_shutdown_lets_requests_in_flight_finish() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def handler(exchange: Exchange) -> None:
            if exchange.request.path == "/slow":
                await release.wait()
            exchange.reply(200, b"ok", "text/plain")

        server = FrontServer(handler, refusal_body, 1024, keepalive_seconds=0.4)
        await server.listen("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /fast HTTP/1.1\r\nHost: gw\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 OK")
            assert await reader.read() == b""  # kept alive, then closed once idle for 0.4 s
        writer.close()
        slow = asyncio.ensure_future(
            _talk(f"http://127.0.0.1:{server.port}", b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        )
        await wait_until(lambda: any(c.task is not None for c in server.connections))
        stopping = asyncio.ensure_future(server.shutdown(timeout=10))
        await wait_until(lambda: server.closing)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        release.set()
        status, headers, body = _split(await slow)
        assert (status, headers["connection"], body) == (200, "close", b"ok")
        await stopping

    asyncio.run(scenario())
