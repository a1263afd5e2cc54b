"""`python -m bench.gateway.cost_split`: each proxy's CPU split into a cost per request and a cost per
streamed chunk.

"CPU per 1,000 chunks" mixes two costs: what a proxy spends to open and close a request (read and
parse it, route it, write it to an engine, send the response's headers and its end, count it) and
what it spends to relay one token's chunk. The bench runs twice at the same streams and token rate,
with long answers (`--long` tokens each) and short ones (`--short`): a proxy's CPU in a phase is
requests x per-request + chunks x per-chunk, two equations per arm, solved here. Its idle work
(the gateway's discovery, a supervisor's bookkeeping) lands in the per-request figure; at a few
hundred requests a second it is noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.gateway.subrun import run_streamed_report


@dataclass(frozen=True)
class CostSplit:
    arm: str
    per_request_us: float
    per_chunk_us: float


def compute_cost_split(arm: str, long: dict[str, Any], short: dict[str, Any]) -> CostSplit | None:
    """Solve cpu = requests * r + chunks * c over the two phases of `arm`; None when it cannot be
    (no CPU read, or two phases with the same chunks per request)."""
    cpu1, cpu2 = long.get("proxy_cpu_s"), short.get("proxy_cpu_s")
    if cpu1 is None or cpu2 is None:
        return None
    r1, c1, r2, c2 = long["requests_sent"], long["chunks"], short["requests_sent"], short["chunks"]
    determinant = r1 * c2 - r2 * c1
    if determinant == 0:
        return None
    per_request = (cpu1 * c2 - cpu2 * c1) / determinant
    per_chunk = (r1 * cpu2 - r2 * cpu1) / determinant
    return CostSplit(arm, round(per_request * 1e6, 1), round(per_chunk * 1e6, 2))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway.cost_split", description=__doc__)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--tokens-per-second", type=float, default=20.0)
    ap.add_argument("--long", type=int, default=50, help="tokens per request in the first run")
    ap.add_argument("--short", type=int, default=2, help="tokens per request in the second run")
    ap.add_argument("--arms", default="direct,gateway,vllm-router,nginx")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def run_bench(args: argparse.Namespace, max_tokens: int) -> dict[str, dict[str, Any]]:
    """One run of `python -m bench.gateway`, its phases by arm."""
    report = run_streamed_report(
        args.streams, args.tokens_per_second, args.arms, args.duration, args.no_install, max_tokens
    )
    return {phase["arm"]: phase for phase in report["phases"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    long, short = run_bench(args, args.long), run_bench(args, args.short)
    solved = (compute_cost_split(arm, long[arm], short[arm]) for arm in long if arm in short)
    splits = [split for split in solved if split is not None]
    if args.json:
        print(json.dumps({"params": vars(args), "splits": [vars(s) for s in splits]}))
        return 0
    rate = f"{args.tokens_per_second:g} tokens/s"
    print(f"{args.streams} streams of {rate}, answers of {args.long} then {args.short} tokens")
    print(f"{'arm':<12} {'CPU µs/request':>15} {'CPU µs/chunk':>13}")
    for s in splits:
        print(f"{s.arm:<12} {s.per_request_us:>15.1f} {s.per_chunk_us:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
