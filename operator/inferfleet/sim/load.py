"""Open-loop Poisson load against an OpenAI-style completions endpoint (`inferfleet sim-load`).

Arrivals follow a Poisson process of `rps` requests per second for `duration` seconds whatever
the server does (open loop: a slow server does not slow the arrivals). At most `max_in_flight`
requests are outstanding; an arrival beyond that is counted as skipped, not sent, so neither the
run's length nor its threads grow without bound.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

MAX_ERROR_SAMPLES = 5


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
