"""The load generator, its own process: N concurrent streams in a closed loop, one record per request.

`python -m bench.gateway.loadgen --url URL [--url URL ...] --streams N ...` writes
{"records": [[stream, start, first_byte, end, chunks, status, complete], ...], "window": [from, to],
"cpu_seconds": s, "wall_seconds": s} to --out. Stream k talks to url[k % len(urls)], sends the same
requests (prompt words from a generator seeded with --seed and k) for every arm, starts after a
random offset in [0, --stagger) so the streams do not move in lockstep, and starts no request after
warm-up + duration; every request is bounded by --timeout.

Before each request a stream pauses a random time in [0, --jitter). The sim engine emits tokens on
one decode-step clock per engine: without the pause, a stream that always talks to the same engine
sends its next request right after a tick and waits almost a whole step for its first token, so any
delay the proxy adds on the way in is hidden in that wait. With a pause of up to one step, a request
meets the clock at a random phase whatever the arm, and the proxy's delay shows in full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench.gateway.sse import SSEFramer
from bench.gateway.stats import Record
from inferfleet.gateway.upstream import EngineClient, UpstreamError, address_of

HEADERS = {"Content-Type": "application/json"}
WORDS = ("the", "fleet", "of", "engines", "serves", "a", "model", "on", "many", "GPUs", "with", "queues")


def build_request(model: str, rng: random.Random, prompt_words: int, max_tokens: int, stream: bool) -> bytes:
    prompt = " ".join(rng.choice(WORDS) for _ in range(prompt_words))
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": stream}
    return json.dumps(body).encode()


class LoadGenerator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.records: list[Record] = []
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> None:
        client = EngineClient()
        self.t0 = time.monotonic()
        try:
            await asyncio.gather(*(self.stream(client, k) for k in range(self.args.streams)))
        finally:
            client.close()

    async def stream(self, client: EngineClient, k: int) -> None:
        args = self.args
        rng = random.Random(args.seed * 1_000_003 + k)
        address = address_of(args.url[k % len(args.url)])
        await asyncio.sleep(rng.uniform(0, args.stagger))
        stop_at = args.warmup + args.duration
        while self.now() < stop_at:
            if args.jitter > 0:
                await asyncio.sleep(rng.uniform(0, args.jitter))
            body = build_request(args.model, rng, args.prompt_words, args.max_tokens, args.stream)
            self.records.append(await self.request(client, k, address, body))

    async def request(self, client: EngineClient, k: int, address: str, body: bytes) -> Record:
        start, status, framer = self.now(), 0, SSEFramer()
        first: float | None = None

        def take(piece: bytes) -> bool:
            nonlocal first
            first = self.now() if first is None else first
            framer.feed(piece)
            return True

        async def take_later(piece: bytes) -> None:
            take(piece)

        complete = False
        try:
            async with asyncio.timeout(self.args.timeout):
                answer = await client.post(address, "/v1/completions", HEADERS, body)
                try:
                    await answer.head
                    status = answer.status
                    if self.args.stream and status == 200:
                        await answer.relay(take, take_later)  # each piece counted as it comes off the socket
                        complete = framer.done
                    else:
                        first = self.now()
                        complete = bool(await answer.read()) and status == 200
                finally:
                    client.release(answer)
        except (UpstreamError, TimeoutError):
            complete = False
        return Record(k, start, first, self.now(), framer.chunks, status, complete)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway.loadgen", description=__doc__)
    ap.add_argument("--url", action="append", required=True, help="base URL (repeat: streams spread)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", type=int, required=True, help="concurrent streams (closed loop)")
    ap.add_argument("--stream", action="store_true", help="streamed requests (SSE)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds not measured at the start")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds of request starts")
    ap.add_argument("--stagger", type=float, default=1.0, help="streams start at random in [0, this)")
    ap.add_argument("--jitter", type=float, default=0.0, help="pause in [0, this) before each request")
    ap.add_argument("--max-tokens", type=int, default=50)
    ap.add_argument("--prompt-words", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    generator = LoadGenerator(args)
    started = time.monotonic()
    uvloop.run(generator.run())
    times = os.times()
    result: dict[str, Any] = {
        "records": [list(r) for r in generator.records],
        "window": [args.warmup, args.warmup + args.duration],
        "cpu_seconds": round(times.user + times.system, 3),
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
