"""Workloads: trace files, load scaling, time compression and a synthetic bursty trace.

A workload is a list of requests (arrival second from 0, prompt tokens, output tokens, and the
ids of the prompt's prefix blocks when the trace has them), sorted by arrival, plus the
observation horizon (GPU-hours are counted over [0, horizon]). `load_trace` reads the formats
in traces/: Azure CSVs (`TIMESTAMP, ContextTokens, GeneratedTokens`), Mooncake JSONL (with
512-token prefix blocks) and our ServeGen conversion (`arrival_s, input_tokens, output_tokens`).

Load scaling (`scale_load`), factor f = k + p with k whole and 0 <= p < 1:
  * k copies of the trace are superposed; copy i (i >= 1) is shifted by its own seeded offset,
    uniform in [0, COPY_SHIFT_MAX_S), wrapping around the end of the trace. The offsets are small
    against the minute-scale structure of the traces (the code trace's bursts stay bursts) but
    keep copies from arriving at the very same instants;
  * one more shifted copy is thinned to a share p of its requests (each kept with probability p);
  * f < 1 is plain thinning of the trace.
Every copy keeps each request's tokens, so the size mix is the trace's own. Copy i's prefix
blocks are renumbered (id + i x (largest id + 1)): a copy is other users with the same shape
of sharing, not the same conversations again a few seconds later.

Time compression c divides every arrival time by c (c > 1 replays faster: a higher rate over a
shorter run with the same request sizes).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from inferfleet.sim.traces import MOONCAKE_BLOCK_TOKENS, load_mooncake

COPY_SHIFT_MAX_S = 10.0

Blocks = tuple[int, ...]
Row = tuple[float, int, int, Blocks]


@dataclass(frozen=True)
class Workload:
    name: str
    arrivals: tuple[float, ...]
    context_tokens: tuple[int, ...]
    generated_tokens: tuple[int, ...]
    horizon: float
    """End of the observation window (seconds): GPU time is counted over [0, horizon]."""
    prefix_blocks: tuple[Blocks, ...] = ()
    """Per request, the ids of its prompt's leading blocks (`block_tokens` each; equal ids at the
    same position mean a shared prefix), or () for a trace without them: every block unique."""
    block_tokens: int = MOONCAKE_BLOCK_TOKENS

    def __len__(self) -> int:
        return len(self.arrivals)

    def blocks(self, i: int) -> Blocks:
        return self.prefix_blocks[i] if self.prefix_blocks else ()

    def rows(self) -> list[Row]:
        n = len(self.arrivals)
        blocks = self.prefix_blocks or ((),) * n
        return list(zip(self.arrivals, self.context_tokens, self.generated_tokens, blocks, strict=True))


def _from_rows(
    name: str, rows: list[Row], horizon: float | None = None, like: Workload | None = None
) -> Workload:
    rows.sort(key=lambda r: r[0])
    arrivals = tuple(r[0] for r in rows)
    end = horizon if horizon is not None else (arrivals[-1] if arrivals else 0.0)
    blocks = tuple(r[3] for r in rows) if any(r[3] for r in rows) else ()
    block_tokens = like.block_tokens if like is not None else MOONCAKE_BLOCK_TOKENS
    return Workload(
        name, arrivals, tuple(r[1] for r in rows), tuple(r[2] for r in rows), end, blocks, block_tokens
    )


def _parse_timestamp(text: str) -> float:
    """'2023-11-16 18:17:03.9799600' -> POSIX seconds (7 fractional digits are fine)."""
    text = text.strip()
    whole, _, frac = text.partition(".")
    base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def load_azure_csv(path: Path) -> Workload:
    """Read a TIMESTAMP, ContextTokens, GeneratedTokens CSV; arrivals become seconds from the first."""
    rows: list[tuple[float, int, int]] = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            try:
                t = _parse_timestamp(rec["TIMESTAMP"])
                ctx, gen = int(rec["ContextTokens"]), int(rec["GeneratedTokens"])
            except (KeyError, ValueError):
                continue
            rows.append((t, max(ctx, 0), max(gen, 1)))
    if not rows:
        raise ValueError(f"{path}: no requests (expected columns TIMESTAMP, ContextTokens, GeneratedTokens)")
    t0 = min(r[0] for r in rows)
    return _from_rows(path.name, [(t - t0, c, g, ()) for t, c, g in rows])


def load_mooncake_workload(path: Path) -> Workload:
    """A Mooncake JSONL trace (plain or .gz) with its 512-token prefix blocks."""
    rows: list[Row] = [
        (r.arrival, r.input_tokens, r.output_tokens, r.prefix_blocks) for r in load_mooncake(path)
    ]
    if not rows:
        raise ValueError(f"{path}: no requests")
    return _from_rows(path.name, rows)


def load_servegen_csv(path: Path) -> Workload:
    """Our ServeGen conversion: `arrival_s, input_tokens, output_tokens` (plain or .gz), no blocks."""
    data = path.read_bytes()
    text = gzip.decompress(data).decode() if path.suffix == ".gz" else data.decode()
    rows: list[Row] = [
        (float(r["arrival_s"]), max(int(r["input_tokens"]), 0), max(int(r["output_tokens"]), 1), ())
        for r in csv.DictReader(io.StringIO(text))
    ]
    if not rows:
        raise ValueError(f"{path}: no requests (expected columns arrival_s, input_tokens, output_tokens)")
    t0 = min(r[0] for r in rows)
    return _from_rows(path.name, [(t - t0, c, g, b) for t, c, g, b in rows])


def load_trace(path: Path) -> Workload:
    """Any trace format of traces/, told apart by its name (.jsonl: Mooncake) or its header."""
    if ".jsonl" in path.suffixes:
        return load_mooncake_workload(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        header = fh.readline()
    if header.startswith("arrival_s"):
        return load_servegen_csv(path)
    return load_azure_csv(path)


def limit_duration(w: Workload, seconds: float | None) -> Workload:
    if seconds is None or seconds >= w.horizon:
        return w
    rows = [r for r in w.rows() if r[0] < seconds]
    return _from_rows(w.name, rows, horizon=seconds, like=w)


def compress_time(w: Workload, factor: float) -> Workload:
    if factor == 1:
        return w
    if factor <= 0:
        raise ValueError("time compression must be > 0")
    rows = [(t / factor, c, g, b) for t, c, g, b in w.rows()]
    return _from_rows(w.name, rows, horizon=w.horizon / factor, like=w)


def scale_load(w: Workload, factor: float, seed: int) -> Workload:
    """Multiply the arrival rate by `factor` (superposed shifted copies, then thinning)."""
    if factor == 1:
        return w
    if factor <= 0:
        raise ValueError("load scale must be > 0")
    rng = random.Random(f"load-scale:{seed}")
    span = max(w.horizon, 1e-9)
    base = w.rows()
    stride = 1 + max((max(b) for b in w.prefix_blocks if b), default=-1)
    whole, part = math.floor(factor), factor - math.floor(factor)
    rows: list[Row] = []
    for i in range(whole + (1 if part > 1e-12 else 0)):
        shift = 0.0 if i == 0 else rng.uniform(0.0, COPY_SHIFT_MAX_S)
        keep = 1.0 if i < whole else part
        for t, c, g, b in base:
            if keep < 1.0 and rng.random() >= keep:
                continue
            blocks = tuple(x + i * stride for x in b) if i and b else b
            rows.append(((t + shift) % span if shift else t, c, g, blocks))
    return _from_rows(w.name, rows, horizon=w.horizon, like=w)


def synthetic_bursty(seed: int, load_scale: float = 1.0, duration: float = 3600.0) -> Workload:
    """A seeded bursty trace: a slow swell plus sudden bursts, with chat-like request sizes.

    Rate (requests/s) = BASE * load_scale * (1 + 0.3 sin(2 pi t / duration)) * burst(t), where
    bursts start as a Poisson process (one per 8 minutes on average), multiply the rate by 2-4
    for 1-4 minutes, with 15-second linear ramps. Prompt and output lengths are lognormal with
    medians 800 and 150 tokens (clipped to 16k and 2k), close to the Azure conversation trace.
    """
    base = 3.0 * load_scale
    rng = random.Random(f"synthetic-bursty:{seed}")
    bursts: list[tuple[float, float, float]] = []
    t = rng.expovariate(1 / 480)
    while t < duration:
        bursts.append((t, rng.uniform(60, 240), rng.uniform(2.0, 4.0)))
        t += rng.expovariate(1 / 480)

    def rate(x: float) -> float:
        r = base * (1 + 0.3 * math.sin(2 * math.pi * x / duration))
        mult = 1.0
        for start, length, height in bursts:
            if start <= x < start + length:
                ramp = min(1.0, (x - start) / 15.0, (start + length - x) / 15.0)
                mult = max(mult, 1 + (height - 1) * ramp)
        return r * mult

    peak = base * 1.3 * 4.0
    rows: list[Row] = []
    t = 0.0
    while True:  # thinning of a homogeneous Poisson process at the peak rate
        t += rng.expovariate(peak)
        if t >= duration:
            break
        if rng.random() * peak <= rate(t):
            ctx = min(16384, max(1, int(rng.lognormvariate(math.log(800), 0.8))))
            gen = min(2048, max(1, int(rng.lognormvariate(math.log(150), 0.9))))
            rows.append((t, ctx, gen, ()))
    return _from_rows("synthetic-bursty", rows, horizon=duration)
