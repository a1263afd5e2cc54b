"""`python -m bench.gateway.front_overhead`: the CPU a request costs in aiohttp's server against a
bare httptools protocol, with the same trivial handler (parse the JSON body, answer a fixed one).

The gateway's front is aiohttp; its engine side is already a protocol of its own on httptools
(gateway/upstream.py). This measures what that step would be worth on the front: each server runs
in its own process on uvloop, and a client process (the gateway's own EngineClient, kept-alive
connections) sends small POSTs over `--connections` connections for `--seconds`; the figure is the
server's CPU over the requests it answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

import httptools
import uvloop
from aiohttp import web

from bench.gateway.cpu import process_cpu_seconds
from bench.gateway.procs import Process
from inferfleet.gateway.upstream import EngineClient
from inferfleet.localcluster.paths import cache_dir
from inferfleet.localcluster.ports import free_ports

SERVERS = ("aiohttp", "httptools")
BODY = json.dumps({"model": "m", "prompt": "hello " * 32, "max_tokens": 2}).encode()
HEADERS = {"Content-Type": "application/json"}
REPLY = b'{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"ok"}]}'


async def _aiohttp_handler(request: web.Request) -> web.Response:
    json.loads(await request.read())
    return web.Response(body=REPLY, content_type="application/json")


async def _ready(request: web.Request) -> web.Response:
    """procs.Process's readiness check, before any measuring."""
    return web.Response()


async def serve_aiohttp(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/{api:(chat/)?completions}", _aiohttp_handler)
    app.router.add_get("/ready", _ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


class _BareProtocol(asyncio.Protocol):
    """HTTP/1.1 on httptools' callbacks, kept alive, one fixed answer per request (a GET without a
    body too: procs.Process's readiness check)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.body:
            json.loads(b"".join(self.body))
        self.body = []
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(REPLY)
        self.transport.write(head + REPLY)  # type: ignore[attr-defined]


async def serve_httptools(port: int) -> None:
    await asyncio.get_running_loop().create_server(_BareProtocol, "127.0.0.1", port)
    await asyncio.Event().wait()


async def send_load(port: int, connections: int, seconds: float) -> int:
    """Requests answered whole over `connections` closed loops for `seconds`."""
    client, answered = EngineClient(), 0
    stop = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal answered
        while time.monotonic() < stop:
            answer = await client.post(f"127.0.0.1:{port}", "/v1/completions", HEADERS, BODY)
            try:
                body = await answer.read()  # not inside `+=`: that would read the count before awaiting
            finally:
                client.release(answer)
            answered += bool(body) and answer.status == 200

    await asyncio.gather(*(loop() for _ in range(connections)))
    client.close()
    return answered


def measure(server: str, connections: int, seconds: float) -> dict[str, float | int | str | None]:
    [port] = free_ports(1)
    command = [sys.executable, "-m", "bench.gateway.front_overhead", "--serve", server, "--port", str(port)]
    log = cache_dir() / "bench-gateway" / "front-overhead" / f"{server}.log"
    process = Process(server, command, f"http://127.0.0.1:{port}/ready", log).start()
    try:
        before = process_cpu_seconds([process.pid])
        answered = uvloop.run(send_load(port, connections, seconds))
        cpu = process_cpu_seconds([process.pid]) - before
    finally:
        process.stop()
    per_request = round(cpu / answered * 1e6, 1) if answered else None
    return {"server": server, "requests": answered, "cpu_s": round(cpu, 3), "cpu_us_per_request": per_request}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway.front_overhead", description=__doc__)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        uvloop.run({"aiohttp": serve_aiohttp, "httptools": serve_httptools}[args.serve](args.port))
        return 0
    rows = [measure(server, args.connections, args.seconds) for server in SERVERS]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(
            f"{row['server']:<10} {row['requests']:>8} requests  {row['cpu_us_per_request']} µs CPU a request"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
