"""The gateway's engine connections (gateway/upstream.py) against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from inferfleet.gateway.upstream import EngineClient, UpstreamError

pytestmark = pytest.mark.unit

PIECES = [b"piece %05d\n" % i for i in range(400)]


class Engine:
    """A server whose answers the tests know byte for byte, and which remembers its callers."""

    def __init__(self) -> None:
        self.client_ports: list[int] = []
        self.stream_ended: list[str] = []
        self.taken = asyncio.Event()
        """Set by a test's client when it took a piece: /stream sends the next one only then."""

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/json", self.json)
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/cut", self.cut)
        return app

    async def json(self, request: web.Request) -> web.Response:
        self.client_ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        echo = (await request.read()).decode()
        return web.json_response({"echo": echo, "auth": request.headers["Authorization"]})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.client_ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for i, piece in enumerate(PIECES):
                if i > 0:  # one piece at a time, each on its own, however loaded the machine is
                    await self.taken.wait()
                    self.taken.clear()
                await response.write(piece)
            await response.write_eof()
            self.stream_ended.append("whole")
        except (ConnectionError, asyncio.CancelledError):
            self.stream_ended.append("client gone")
            raise
        return response

    async def cut(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(PIECES[0])
        assert request.transport is not None
        request.transport.abort()  # the replica dies mid-answer
        return response


@asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[str]:
    runner = web.AppRunner(engine.build_app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_a_relay_passes_every_piece_in_order_when_the_client_cannot_take_some_at_once() -> None:
    async def scenario() -> None:
        engine, client = Engine(), EngineClient()
        async with serving(engine) as address:
            answer = await client.post(address, "/stream", {}, b"")
            await answer.head
            got: list[bytes] = []
            offered = slow = 0

            def push(piece: bytes) -> bool:
                nonlocal offered
                offered += 1
                if offered % 3 == 0:
                    return False  # a slow client: this piece must wait for the handler
                got.append(piece)
                engine.taken.set()
                return True

            async def write(piece: bytes) -> None:
                nonlocal slow
                slow += 1
                await asyncio.sleep(0.001)  # the client takes its time
                got.append(piece)
                engine.taken.set()

            await answer.relay(push, write)
            client.release(answer)
            assert answer.status == 200
            assert answer.content_type == "text/event-stream"
            assert b"".join(got) == b"".join(PIECES)
            # every piece after the first (which may come with the headers) was offered to the push,
            # and every third of those went the slow way: the order held across both paths
            assert offered >= len(PIECES) - 1
            assert slow >= offered // 3
            client.close()

    asyncio.run(scenario())


def test_a_connection_whose_answer_was_read_whole_serves_the_next_and_a_cut_one_is_closed() -> None:
    async def scenario() -> None:
        engine, client = Engine(), EngineClient()
        async with serving(engine) as address:
            for body in (b"one", b"two"):
                answer = await client.post(address, "/json", {"Authorization": "Bearer t"}, body)
                assert (await answer.read()).startswith(b'{"echo": "' + body)
                client.release(answer)
            assert len(set(engine.client_ports)) == 1  # one kept-alive connection served both

            answer = await client.post(address, "/stream", {}, b"")
            assert await answer.next_piece() == PIECES[0]
            client.release(answer)  # nobody reads the rest: the engine must see its client go
            while not engine.stream_ended:
                await asyncio.sleep(0.01)
            assert engine.stream_ended == ["client gone"]

            answer = await client.post(address, "/json", {"Authorization": "Bearer t"}, b"three")
            await answer.read()
            client.release(answer)
            assert len(set(engine.client_ports)) == 2  # the cut connection was not reused
            client.close()

    asyncio.run(scenario())


def test_failures_name_their_reason() -> None:
    async def scenario() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        client = EngineClient(connect_timeout=5)
        with pytest.raises(UpstreamError) as refused:
            await client.post(f"127.0.0.1:{closed_port}", "/json", {}, b"")
        assert refused.value.reason == "connect"

        async with serving(Engine()) as address:
            answer = await client.post(address, "/cut", {}, b"")
            await answer.head
            got: list[bytes] = []
            with pytest.raises(UpstreamError) as cut:
                await answer.relay(_taking_all(got), _append_to(got))
            assert cut.value.reason == "reset"
            assert b"".join(got) == PIECES[0]  # what came before the cut was passed on
            client.release(answer)

            with pytest.raises(ValueError, match="line break"):
                await client.post(address, "/json", {"Authorization": "t\r\nX-Evil: 1"}, b"")

        server = await asyncio.start_server(_talk_nonsense, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        answer = await client.post(f"127.0.0.1:{port}", "/json", {}, b"")
        with pytest.raises(UpstreamError) as nonsense:
            await answer.head
        assert nonsense.value.reason == "reset"
        assert "malformed" in str(nonsense.value)
        client.release(answer)
        server.close()
        client.close()

    asyncio.run(scenario())


def _taking_all(got: list[bytes]) -> Callable[[bytes], bool]:
    def push(piece: bytes) -> bool:
        got.append(piece)
        return True

    return push


def _append_to(got: list[bytes]) -> Callable[[bytes], Awaitable[None]]:
    async def write(piece: bytes) -> None:
        got.append(piece)

    return write


async def _talk_nonsense(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"SMTP ready\r\n\r\n")
    await writer.drain()
    writer.close()


def test_idle_connections_leave_the_pool_when_closed_by_either_side() -> None:
    async def scenario() -> None:
        engine = Engine()
        brief, lasting = EngineClient(keepalive_seconds=0.2), EngineClient(keepalive_seconds=30)
        async with serving(engine) as address:
            for client in (brief, lasting):
                answer = await client.post(address, "/json", {"Authorization": "Bearer t"}, b"x")
                await answer.read()
                client.release(answer)
                assert client.idle_connections == 1
            await _wait_until(lambda: brief.idle_connections == 0)  # idle past its keep-alive: closed
            assert lasting.idle_connections == 1
        # the engine went away (a replica deleted): the connection it closed leaves nothing behind
        await _wait_until(lambda: lasting.idle_connections == 0)
        brief.close()
        lasting.close()

    asyncio.run(scenario())


async def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
