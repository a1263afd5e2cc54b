"""Open-loop Poisson load against an OpenAI-style completions endpoint.

`run_load` (`inferfleet sim-load`) sends a constant rate to one server; `GatewayLoad` (the demo)
follows a rate function per model, each request naming its model, through one gateway.

Arrivals follow a Poisson process (of `rps` requests per second for `duration` seconds) whatever
the server does (open loop: a slow server does not slow the arrivals). At most `max_in_flight`
requests are outstanding; an arrival beyond that is counted as skipped, not sent, so neither the
run's length nor its threads grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

MAX_ERROR_SAMPLES = 5
RateFn = Callable[[float], float]
"""Requests per second at `t` seconds after the load started."""


@dataclass
class LoadSummary:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    latencies: list[float] = field(default_factory=list)
    """Seconds from send to a complete successful reply."""
    error_samples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.ok > 0 and self.errors == 0

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (0 < q <= 1) of the successful requests' latencies."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

    def render(self) -> str:
        def seconds(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}s"

        line = (
            f"sent={self.sent} ok={self.ok} errors={self.errors} skipped={self.skipped} "
            f"p50={seconds(self.percentile(0.5))} p95={seconds(self.percentile(0.95))}"
        )
        return "\n".join([line, *(f"error: {sample}" for sample in self.error_samples)])


def completions_url(url: str) -> str:
    """The completions endpoint of a server URL, given with or without its `/v1` suffix."""
    base = url.rstrip("/")
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


@dataclass
class _Recorder:
    summary: LoadSummary = field(default_factory=LoadSummary)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self, latency: float) -> None:
        with self.lock:
            self.summary.ok += 1
            self.summary.latencies.append(latency)

    def failure(self, reason: str) -> None:
        with self.lock:
            self.summary.errors += 1
            if len(self.summary.error_samples) < MAX_ERROR_SAMPLES:
                self.summary.error_samples.append(reason)


def _send_one(target: str, payload: bytes, timeout: float, recorder: _Recorder) -> None:
    request = urllib.request.Request(
        target, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read())
        if not reply.get("choices"):
            raise ValueError(f"no choices in the reply: {reply!r:.200}")
    except urllib.error.HTTPError as e:
        recorder.failure(f"HTTP {e.code}: {e.read()[:200]!r}")
    except Exception as e:
        recorder.failure(f"{type(e).__name__}: {e}")
    else:
        recorder.success(time.monotonic() - started)


def run_load(
    url: str,
    rps: float,
    duration: float,
    max_tokens: int = 16,
    max_in_flight: int = 64,
    timeout: float = 60.0,
    seed: int | None = None,
) -> LoadSummary:
    """Send Poisson arrivals to `url`'s completions endpoint and wait for every reply."""
    if rps <= 0 or duration <= 0 or max_in_flight < 1 or max_tokens < 1:
        raise ValueError("rps and duration must be > 0, max_in_flight and max_tokens >= 1")
    rng = random.Random(seed)
    target = completions_url(url)
    payload = json.dumps({"prompt": "Say something.", "max_tokens": max_tokens}).encode()
    recorder = _Recorder()
    slots = threading.BoundedSemaphore(max_in_flight)
    senders: list[threading.Thread] = []

    def send(slot_held: threading.BoundedSemaphore) -> None:
        try:
            _send_one(target, payload, timeout, recorder)
        finally:
            slot_held.release()

    start = time.monotonic()
    arrival = rng.expovariate(rps)
    while arrival < duration:
        delay = start + arrival - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the arrival schedule itself, not a wait for a condition
        if slots.acquire(blocking=False):
            recorder.summary.sent += 1
            sender = threading.Thread(target=send, args=(slots,), name="sim-load", daemon=True)
            sender.start()
            senders.append(sender)
        else:
            recorder.summary.skipped += 1
        arrival += rng.expovariate(rps)
    for sender in senders:
        sender.join()
    return recorder.summary


@dataclass
class ModelLoad:
    """Open-loop arrivals for one model at `rate(t)` requests/s, and what became of them."""

    model: str
    rate: RateFn
    sent: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    """Arrivals not sent because `max_in_flight` requests were outstanding."""
    cancelled: int = 0
    """Requests still outstanding when the load stopped and its grace ran out."""
    in_flight: int = 0
    first_answer: tuple[float, float] | None = None
    """(seconds since the load started when it was sent, seconds to its answer) of the first
    request answered: for a service at zero, how long the gateway held it until a replica was Ready."""
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def failure(self, reason: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(reason)


class GatewayLoad:
    """Open-loop Poisson load, one rate function per model, against one OpenAI-style URL.

    The `model` of each request picks the service at the gateway, as a client's does. Arrivals
    follow each model's rate, piecewise constant over `tick_seconds` (a non-homogeneous Poisson
    process), whatever the server does; at most `max_in_flight` requests are outstanding in all,
    an arrival beyond that is counted as skipped. It runs on an event loop of its own thread.
    """

    def __init__(
        self,
        url: str,
        loads: dict[str, ModelLoad],
        *,
        max_tokens: int = 16,
        max_in_flight: int = 1024,
        timeout: float = 180.0,
        tick_seconds: float = 0.25,
        seed: int = 7,
    ) -> None:
        self.target = completions_url(url)
        self.loads = loads
        self.max_tokens, self.max_in_flight, self.timeout = max_tokens, max_in_flight, timeout
        self.tick_seconds = tick_seconds
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._grace = 0.0
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),),
                                        name="gateway-load", daemon=True)  # fmt: skip
        self.started = 0.0

    def start(self) -> GatewayLoad:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self, grace_seconds: float = 30.0) -> None:
        """No more arrivals; requests outstanding get `grace_seconds` to finish, then are cut."""
        self._grace = grace_seconds
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_soon)
            self._thread.join()
        self._loop.close()

    def _stop_soon(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    @property
    def in_flight(self) -> int:
        return sum(load.in_flight for load in self.loads.values())

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tick = 0
            while not self._stopping.is_set():
                t = tick * self.tick_seconds
                for load in self.loads.values():
                    for _ in range(poisson(self._rng, max(load.rate(t), 0.0) * self.tick_seconds)):
                        offset = t + self._rng.random() * self.tick_seconds
                        task = asyncio.create_task(self._arrive(session, load, offset))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                tick += 1
                wait = self.started + tick * self.tick_seconds - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=max(wait, 0.0))
            await self._finish(tasks)

    async def _finish(self, tasks: set[asyncio.Task[None]]) -> None:
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _arrive(self, session: aiohttp.ClientSession, load: ModelLoad, at: float) -> None:
        assert self._stopping is not None
        delay = self.started + at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):  # the arrival's own time, or the stop
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                return
        if self.in_flight >= self.max_in_flight:
            load.skipped += 1
            return
        body = {"model": load.model, "prompt": "Say something.", "max_tokens": self.max_tokens}
        load.sent += 1
        load.in_flight += 1
        sent = time.monotonic()
        try:
            await self._post(session, load, body, sent)
        except asyncio.CancelledError:
            load.cancelled += 1
            raise
        except Exception as e:
            load.failure(f"{type(e).__name__}: {e}")
        finally:
            load.in_flight -= 1

    async def _post(
        self, session: aiohttp.ClientSession, load: ModelLoad, body: dict[str, object], sent: float
    ) -> None:
        async with session.post(self.target, json=body) as response:
            text = await response.text()
        if response.status != 200:
            load.failure(f"HTTP {response.status}: {text[:200]}")
            return
        if not json.loads(text).get("choices"):
            load.failure(f"no choices in the reply: {text[:200]}")
            return
        latency = time.monotonic() - sent
        load.ok += 1
        load.latencies.append(latency)
        if load.first_answer is None:
            load.first_answer = (sent - self.started, latency)


def poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    # Knuth's method: fine for the per-tick means used here (tens at most).
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
