"""The routing arm's load generator, its own process: a workload file replayed open-loop.

`python -m bench.gateway.replay --workload FILE --url URL [--url URL ...] --model M --out OUT`
sends request i of the workload (bench.gateway.prefix_workload: arrival time, block ids, length)
at its arrival time, whatever the answers before it did (open loop: a slow arm builds a backlog, it
does not slow the arrivals), streamed, to url[i % len(urls)] (one URL: a router; several: client-side
round-robin). Writes {"records": [[i, start, first_byte, end, chunks, status, complete], ...],
"late_p99_s": ..., "cpu_seconds": s, "wall_seconds": s} to --out; every request is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway.prefix_workload import WorkItem, read_workload, render_prompt, render_prompt_tokens
from bench.gateway.sse import SSEFramer
from bench.gateway.stats import Record, percentile

PROMPT_FORMS = ("tokens", "text")


def build_body(model: str, item: WorkItem, words_per_block: int, form: str = "tokens") -> bytes:
    """The request: its prompt as token ids (a router that routes on tokens needs them) or text."""
    render = render_prompt_tokens if form == "tokens" else render_prompt
    prompt = render(item.blocks, item.words, words_per_block)
    body = {"model": model, "prompt": prompt, "max_tokens": item.max_tokens, "stream": True}
    return json.dumps(body).encode()


class Replay:
    def __init__(self, args: argparse.Namespace, items: list[WorkItem]) -> None:
        self.args = args
        self.items = items
        self.records: list[Record] = []
        self.late: list[float] = []
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=self.args.timeout)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            tasks = []
            self.t0 = time.monotonic()
            for i, item in enumerate(self.items):
                wait = item.at - self.now()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.late.append(max(0.0, -wait))
                body = build_body(self.args.model, item, self.args.words_per_block, self.args.prompts)
                url = self.args.url[i % len(self.args.url)].rstrip("/") + "/v1/completions"
                tasks.append(asyncio.create_task(self.request(session, i, url, body)))
            await asyncio.gather(*tasks)

    async def request(self, session: aiohttp.ClientSession, i: int, url: str, body: bytes) -> None:
        start, first, status, chunks, complete = self.now(), None, 0, 0, False
        try:
            async with session.post(url, data=body) as resp:
                status = resp.status
                framer = SSEFramer()
                async for piece in resp.content.iter_any():
                    first = self.now() if first is None else first
                    framer.feed(piece)
                chunks, complete = framer.chunks, framer.done and status == 200
        except (aiohttp.ClientError, TimeoutError):
            complete = False
        self.records.append(Record(i, start, first, self.now(), chunks, status, complete))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway.replay", description=__doc__)
    ap.add_argument("--workload", type=Path, required=True, help="JSONL of bench.gateway.prefix_workload")
    ap.add_argument("--url", action="append", required=True, help="base URL (repeat: round-robin)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--words-per-block", type=int, required=True)
    ap.add_argument("--prompts", choices=PROMPT_FORMS, default="tokens", help="token ids or text")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    replay = Replay(args, read_workload(args.workload))
    started = time.monotonic()
    asyncio.run(replay.run())
    times = os.times()
    result: dict[str, Any] = {
        "records": [list(r) for r in sorted(replay.records)],
        "late_p99_s": percentile(replay.late, 99),
        "cpu_seconds": round(times.user + times.system, 3),
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
