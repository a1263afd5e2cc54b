"""`python -m bench.gateway.rates`: at which token rates the 1,000-stream target can be met here.

Issue 15 asks an added p99 TTFT of at most 10 ms at 1,000 streams of about 50 tokens/s. On one
machine that also runs the engines and the load generator, each token's chunk costs CPU three
times (the engine's send, the relay, the client's read), so past some rate the machine has no
room for any relay, however cheap. This runs the bench at one stream count over a list of rates,
each arm in the same run (direct, the gateway, vllm-router and nginx where they run), and prints
per rate: the machine's busy share with the direct arm alone, its chunks a second over the
measured window, each relay's added p99 TTFT, its CPU per chunk and the busy share with it, and
`need`: the direct arm's busy share plus what the cheapest relay measured would take to relay the
direct arm's chunks at its own CPU per chunk, over the cores. It is a lower bound: the busy share
is over the whole phase, the streams' staggered start included. The verdict:

* **met**: the gateway's added p99 is within the target;
* **missed**: it is not, while another relay in the same run is;
* **machine-bound**: no relay is, and `need` is 100 % or more: the machine cannot carry the
  engines, the client and even the cheapest relay;
* **unmet by all**: no relay is, though `need` is under 100 %: every relay's tail is queueing on
  a busy machine, the gateway's no less than the others';
* **unknown**: the gateway is not within it and no other relay ran to compare.

The exit code is 1 when some rate is missed or unknown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.gateway.arms import DIRECT, GATEWAY
from bench.gateway.cli import machine, source_version
from bench.gateway.subrun import run_streamed_report

MET, MISSED, MACHINE_BOUND, UNMET_BY_ALL, UNKNOWN = (
    "met",
    "missed",
    "machine-bound",
    "unmet by all",
    "unknown",
)
FAILED = (MISSED, UNKNOWN)


@dataclass(frozen=True)
class RelayFigures:
    arm: str
    added_p99_ms: float | None
    cpu_per_chunk_us: float | None
    machine_busy_share: float | None


@dataclass(frozen=True)
class RateVerdict:
    tokens_per_second: float
    direct_busy_share: float | None
    direct_chunks_per_second: float
    relays: tuple[RelayFigures, ...]
    cheapest_relay: str | None
    need_share: float | None
    """Direct arm's busy share + the cheapest relay's CPU for the direct arm's chunks, over the cores."""
    verdict: str


def _relay(phase: dict[str, Any]) -> RelayFigures:
    cpu, chunks = phase.get("proxy_cpu_s"), phase.get("chunks", 0)
    per_chunk = round(cpu / chunks * 1e6, 2) if cpu is not None and chunks > 0 else None
    return RelayFigures(phase["arm"], phase.get("added_p99_ms"), per_chunk, phase.get("machine_busy_share"))


def _within(relay: RelayFigures, target_ms: float) -> bool:
    return relay.added_p99_ms is not None and relay.added_p99_ms <= target_ms


def compute_rate_verdict(
    tokens_per_second: float, phases: Sequence[dict[str, Any]], target_ms: float, cores: int
) -> RateVerdict | None:
    """The verdict of one rate's run (its streamed phases by arm); None without the direct arm or
    the gateway."""
    by_arm = {p["arm"]: p for p in phases}
    direct = by_arm.get(DIRECT)
    if direct is None or GATEWAY not in by_arm:
        return None
    relays = tuple(_relay(p) for p in phases if p["arm"] != DIRECT)
    chunk_rate = float(direct.get("window_chunks_per_s") or 0.0)
    priced = [(r.cpu_per_chunk_us, r.arm) for r in relays if r.cpu_per_chunk_us is not None]
    cheapest = min(priced, default=None)
    busy = direct.get("machine_busy_share")
    need = None
    if cheapest is not None and busy is not None:
        need = round(busy + chunk_rate * cheapest[0] / 1e6 / cores, 3)
    return RateVerdict(
        tokens_per_second,
        busy,
        round(chunk_rate),
        relays,
        None if cheapest is None else cheapest[1],
        need,
        compute_verdict(relays, target_ms, need),
    )


def compute_verdict(relays: Sequence[RelayFigures], target_ms: float, need: float | None) -> str:
    ours = next(r for r in relays if r.arm == GATEWAY)
    others = [r for r in relays if r.arm != GATEWAY]
    if _within(ours, target_ms):
        return MET
    if any(_within(r, target_ms) for r in others):
        return MISSED
    if not others:
        return UNKNOWN
    return MACHINE_BOUND if need is not None and need >= 1.0 else UNMET_BY_ALL


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway.rates", description=__doc__)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rates", default="20,30,40,50", help="tokens per second per stream, one run each")
    ap.add_argument("--target-ms", type=float, default=10.0, help="added p99 TTFT target")
    ap.add_argument("--arms", default="direct,gateway,vllm-router,nginx")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def run_bench(args: argparse.Namespace, tokens_per_second: float) -> dict[str, Any]:
    """One run of `python -m bench.gateway` at this rate: its report."""
    return run_streamed_report(args.streams, tokens_per_second, args.arms, args.duration, args.no_install)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render(verdicts: Sequence[RateVerdict], streams: int, target_ms: float) -> str:
    lines = [f"{streams} streams; target: added p99 TTFT <= {target_ms:g} ms", ""]
    columns = f"{'arm':<12} {'+p99 ms':>8} {'µs/chunk':>8} {'busy':>5}"
    head = f"{'tokens/s':>8} {'direct busy':>11} {'chunks/s':>8}  {columns}"
    lines += [head, "-" * len(head)]
    for v in verdicts:
        first = f"{v.tokens_per_second:>8g} {_pct(v.direct_busy_share):>11} {v.direct_chunks_per_second:>8}"
        for i, r in enumerate(v.relays):
            lead = first if i == 0 else " " * len(first)
            lines.append(f"{lead}  {r.arm:<12} {_num(r.added_p99_ms):>8} {_num(r.cpu_per_chunk_us):>8} "
                         f"{_pct(r.machine_busy_share):>5}")  # fmt: skip
        need = (
            f"; need with {v.cheapest_relay}: {_pct(v.need_share)} of the machine" if v.cheapest_relay else ""
        )
        lines.append(f"{'':>8} -> {v.verdict}{need}")
    lines.append("")
    lines.append(summary_line(verdicts))
    return "\n".join(lines)


def summary_line(verdicts: Sequence[RateVerdict]) -> str:
    def rates(verdict: str) -> str:
        return ", ".join(f"{v.tokens_per_second:g}" for v in verdicts if v.verdict == verdict)

    said = "; ".join(
        f"{verdict} at {rates(verdict)} tokens/s"
        for verdict in (MET, UNMET_BY_ALL, MACHINE_BOUND, UNKNOWN)
        if rates(verdict)
    )
    if rates(MISSED):
        return f"MISSED at {rates(MISSED)} tokens/s, where another relay is within the target; {said}"
    if rates(UNKNOWN):
        return f"UNKNOWN: no other relay ran to compare; {said}"
    return f"the gateway is within the target at every rate where any relay is: {said}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    verdicts = []
    for rate in (float(r) for r in args.rates.split(",")):
        report = run_bench(args, rate)
        verdict = compute_rate_verdict(rate, report["phases"], args.target_ms, os.cpu_count() or 1)
        if verdict is not None:
            verdicts.append(verdict)
    if args.json:
        params = vars(args) | {"commit": source_version(), "machine": machine()}
        print(json.dumps({"params": params, "rates": [asdict(v) for v in verdicts]}))
    else:
        print(render(verdicts, args.streams, args.target_ms))
    return 1 if any(v.verdict in FAILED for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
