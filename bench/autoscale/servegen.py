"""Convert one window of Alibaba ServeGen's published client statistics into a request-level trace.

ServeGen (github.com/alibaba/ServeGen, Apache-2.0; "ServeGen: Workload Characterization of
Large Language Model Serving in Production", arXiv 2505.09999) publishes, per model category,
per client ("chunk"), real Alibaba Bailian traffic as statistics, not requests:

* `chunk-<id>-trace.csv`: one line per 600 s window, `timestamp, rate, cv, pattern, a, b` (rate
  in requests/s, the inter-arrival times' coefficient of variation, and the distribution fitted
  to them: `Gamma` with shape a and scale b, or `Weibull` with shape a and scale b; an empty
  pattern means no traffic in that window);
* `chunk-<id>-dataset.json`: `{timestamp: {"input_tokens": "{tokens: probability, ...}",
  "output_tokens": ...}}`, the request-length distributions, published every few hours; a
  window uses the latest one at or before it.

This converter (our own code, not ServeGen's generator) draws, for every client and window of
the chosen span, `round(rate x fraction x window)` requests (stochastic rounding, so the
expected count is exact), their gaps from the client's fitted inter-arrival distribution
rescaled so the gaps fill the window (the fitted shape, and so the burstiness, is kept; the
count follows the published rate), and each request's prompt and output lengths from the
client's published distributions by inverse CDF. One `random.Random(seed)` drives all draws,
clients in ascending id. `fraction` thins every client alike, keeping the file small; the
benchmark's `--load-scale` scales it back up.

    python -m bench.autoscale.servegen --data DIR/data/language/m-large --start 79200 \\
        --duration 3600 --fraction 0.025 --seed 0 --out traces/servegen-m-large-22h.csv.gz

writes `arrival_s,input_tokens,output_tokens` (gzip CSV when the name ends in .gz), sorted by
arrival, seconds from the span's start.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import csv
import gzip
import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WINDOW_S = 600


@dataclass(frozen=True)
class ClientWindow:
    """One client's published statistics for one window."""

    start: int
    rate: float
    pattern: str
    """`Gamma` or `Weibull`; empty: no traffic."""
    shape: float
    scale: float


@dataclass(frozen=True)
class LengthDist:
    """A published token-length distribution as an inverse CDF."""

    values: tuple[int, ...]
    cumulative: tuple[float, ...]

    def mean(self) -> float:
        prev, total = 0.0, 0.0
        for v, c in zip(self.values, self.cumulative, strict=True):
            total += v * (c - prev)
            prev = c
        return total / self.cumulative[-1]

    def sample(self, rng: random.Random) -> int:
        u = rng.random() * self.cumulative[-1]
        return self.values[min(bisect.bisect_right(self.cumulative, u), len(self.values) - 1)]


def parse_trace_csv(text: str) -> list[ClientWindow]:
    out = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) == 6:
            ts, rate, _cv, pattern, a, b = row
            out.append(ClientWindow(int(ts), float(rate), pattern, float(a), float(b)))
    return out


def parse_length_dist(text: str) -> LengthDist | None:
    """`"{tokens: probability, ...}"` (a Python dict literal, as published) -> LengthDist."""
    pmf = ast.literal_eval(text)
    items = sorted((int(k), float(p)) for k, p in pmf.items() if p > 0)
    if not items:
        return None
    cumulative, acc = [], 0.0
    for _, p in items:
        acc += p
        cumulative.append(acc)
    return LengthDist(tuple(v for v, _ in items), tuple(cumulative))


def build_datasets(text: str) -> dict[int, tuple[LengthDist, LengthDist]]:
    """A client's dataset JSON -> {timestamp: (input lengths, output lengths)}."""
    out = {}
    for ts, fields in json.loads(text).items():
        dists = [parse_length_dist(fields.get(k, "{}")) for k in ("input_tokens", "output_tokens")]
        if dists[0] is not None and dists[1] is not None:
            out[int(ts)] = (dists[0], dists[1])
    return out


def dataset_at(
    datasets: dict[int, tuple[LengthDist, LengthDist]], ts: int
) -> tuple[LengthDist, LengthDist] | None:
    """The latest published distributions at or before `ts` (as ServeGen's ClientPoolView does)."""
    before = [t for t in datasets if t <= ts]
    return datasets[max(before)] if before else None


def draw_gap(rng: random.Random, window: ClientWindow) -> float:
    if window.pattern == "Gamma":
        return rng.gammavariate(window.shape, window.scale)
    if window.pattern == "Weibull":
        return rng.weibullvariate(window.scale, window.shape)
    raise ValueError(f"unknown arrival pattern {window.pattern!r}")


def sample_window(
    rng: random.Random, window: ClientWindow, fraction: float, length: float = WINDOW_S
) -> list[float]:
    """Arrival offsets in [0, length): the expected count rate x fraction x length, the fitted gaps' shape."""
    expected = window.rate * fraction * length
    count = math.floor(expected) + (1 if rng.random() < expected - math.floor(expected) else 0)
    if count == 0 or not window.pattern:
        return []
    gaps = [max(draw_gap(rng, window), 1e-12) for _ in range(count + 1)]
    unit = length / sum(gaps)
    offsets, t = [], 0.0
    for g in gaps[:-1]:
        t += g * unit
        offsets.append(min(t, math.nextafter(length, 0.0)))
    return offsets


def convert_client(
    rng: random.Random,
    windows: Sequence[ClientWindow],
    datasets: dict[int, tuple[LengthDist, LengthDist]],
    start: int,
    duration: int,
    fraction: float,
) -> list[tuple[float, int, int]]:
    rows = []
    for w in windows:
        if not start <= w.start < start + duration or w.rate <= 0 or not w.pattern:
            continue
        dists = dataset_at(datasets, w.start)
        if dists is None:
            continue
        length = min(WINDOW_S, start + duration - w.start)
        for offset in sample_window(rng, w, fraction, length):
            rows.append((w.start - start + offset, dists[0].sample(rng), max(1, dists[1].sample(rng))))
    return rows


def convert(
    data_dir: Path, start: int, duration: int, fraction: float, seed: int
) -> list[tuple[float, int, int]]:
    """Every client of `data_dir` (one model's chunk files) over [start, start + duration)."""
    rng = random.Random(seed)
    ids = sorted(int(p.name.split("-")[1]) for p in data_dir.glob("chunk-*-trace.csv"))
    rows: list[tuple[float, int, int]] = []
    for cid in ids:
        windows = parse_trace_csv((data_dir / f"chunk-{cid}-trace.csv").read_text())
        active = [w for w in windows if start <= w.start < start + duration and w.rate > 0 and w.pattern]
        if not active:
            continue
        datasets = build_datasets((data_dir / f"chunk-{cid}-dataset.json").read_text())
        rows.extend(convert_client(rng, windows, datasets, start, duration, fraction))
    rows.sort()
    return rows


def write_trace(rows: Sequence[tuple[float, int, int]], out: Path) -> None:
    buf = io.StringIO()
    buf.write("arrival_s,input_tokens,output_tokens\n")
    for t, i, o in rows:
        buf.write(f"{t:.3f},{i},{o}\n")
    data = buf.getvalue().encode()
    out.write_bytes(gzip.compress(data, mtime=0) if out.suffix == ".gz" else data)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscale.servegen", description=__doc__)
    ap.add_argument(
        "--data", type=Path, required=True, help="a ServeGen model folder: data/<category>/<model>"
    )
    ap.add_argument("--start", type=int, required=True, help="span start, seconds (a multiple of 600)")
    ap.add_argument("--duration", type=int, default=3600)
    ap.add_argument("--fraction", type=float, default=1.0, help="share of every client's rate to keep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = convert(args.data, args.start, args.duration, args.fraction, args.seed)
    write_trace(rows, args.out)
    n = len(rows)
    mean_in = sum(r[1] for r in rows) / n if n else 0.0
    mean_out = sum(r[2] for r in rows) / n if n else 0.0
    print(f"{args.out}: {n} requests, mean input {mean_in:.0f}, mean output {mean_out:.0f} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
