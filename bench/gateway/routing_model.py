"""`python -m bench.gateway.routing_model`: the routing arm without engines or HTTP, in seconds.

The routing bench's requests (same options as `bench.gateway.routing`), in arrival order, go
through a router that sees each engine's requests in flight, onto per-engine LRU prefix caches
kept as the sim engine keeps them. A request holds its engine for its uncached prompt words over
the prefill rate plus its output tokens over the decode rate: the sim engine's times (at 256
slots no engine queues). The model reproduces the hit rates measured on engines to about 0.005
(bench/gateway/README.md), so a routing rule can be weighed before a run on engines.

Routers:
* prefix-affinity: the gateway's own block index and pick (`PrefixIndex`, `pick_endpoint_by_match`)
  at `--prefix-load-bound` and `--prefix-load-slack`, least load when it picks none;
* least-load: the fewest requests in flight;
* cache-aware model: vllm-router 0.1.17's `cache_aware` rules as its `--help` states them, at
  block granularity: the longest match when it covers more than 0.3 of the prompt
  (`--cache-threshold`), else the worker whose routed blocks are fewest (its smallest tree); least
  load once the busiest worker has more than 64 requests above the least busy and more than 1.5x
  its load. A model of a peer, not the peer: the bench's cache-aware arm runs the real router.
"""

from __future__ import annotations

import heapq
import json
import sys
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from bench.gateway.prefix_workload import WorkItem, build_workload, cached_run, render_prompt
from bench.gateway.routing import Route, build_prefix_affinity_route, least_loaded, parse_args
from inferfleet.gateway.prefix_index import PrefixIndex
from inferfleet.localcluster.paths import repo_root
from inferfleet.planning.prefix_routing import LoadBound, prefix_blocks
from inferfleet.sim.traces import load_mooncake

CACHE_THRESHOLD, BALANCE_ABS, BALANCE_REL = 0.3, 64, 1.5
"""vllm-router 0.1.17 defaults: `--cache-threshold`, `--balance-abs-threshold`, `--balance-rel-threshold`."""


@dataclass(frozen=True)
class RoutingModel:
    hit_rate: float
    uncached_p50_words: int
    busiest_engine_over_mean: float


def build_cache_aware_route(endpoints: Sequence[str]) -> Route:
    # vllm-router keeps 32M characters of prompts per worker (--max-tree-size): more than these
    # workloads hold, so its model forgets nothing (the gateway's index keeps MAX_BLOCKS).
    index, routed = PrefixIndex(capacity=sys.maxsize), {e: set[int]() for e in endpoints}

    def route(in_flight: Mapping[str, int], blocks: tuple[int, ...]) -> str:
        busiest, idlest = max(in_flight.values()), min(in_flight.values())
        held = index.match(blocks, endpoints).held
        best = max(held.values(), default=0)
        if busiest - idlest > BALANCE_ABS and busiest > BALANCE_REL * idlest:
            endpoint = least_loaded(in_flight)
        elif blocks and best > CACHE_THRESHOLD * len(blocks):
            endpoint = min((e for e in endpoints if held[e] == best), key=lambda e: (in_flight[e], e))
        else:
            endpoint = min(endpoints, key=lambda e: (len(routed[e]), e))
        index.record(blocks, endpoint)
        routed[endpoint].update(blocks)
        return endpoint

    return route


def compute_routing_model(
    items: Sequence[WorkItem], route: Route, endpoints: Sequence[str], cache_blocks: int,
    words_per_block: int, prefill_words_per_second: float, tokens_per_second: float,
) -> RoutingModel:  # fmt: skip
    """Replay `items` through `route` onto an LRU cache per endpoint, with requests in flight for
    the time the sim engine would take on each (see the module's docstring)."""
    lrus: dict[str, OrderedDict[tuple[int, ...], None]] = {e: OrderedDict() for e in endpoints}
    in_flight, served = dict.fromkeys(endpoints, 0), Counter[str]()
    ends: list[tuple[float, str]] = []
    queried = hit = 0
    uncached = []
    for item in items:
        while ends and ends[0][0] <= item.at:
            in_flight[heapq.heappop(ends)[1]] -= 1
        prompt = render_prompt(item.blocks, item.words, words_per_block)
        endpoint = route(in_flight, prefix_blocks({"prompt": prompt}, chat=False))
        missed = (
            item.words - cached_run(lrus[endpoint], item, words_per_block, cache_blocks) * words_per_block
        )
        queried, hit = queried + item.words, hit + item.words - missed
        uncached.append(missed)
        in_flight[endpoint] += 1
        served[endpoint] += 1
        took = missed / prefill_words_per_second + item.max_tokens / tokens_per_second
        heapq.heappush(ends, (item.at + took, endpoint))
    uncached.sort()
    return RoutingModel(
        hit_rate=round(hit / queried, 4) if queried else 0.0,
        uncached_p50_words=uncached[(len(uncached) - 1) // 2] if uncached else 0,
        busiest_engine_over_mean=round(max(served.values()) * len(endpoints) / len(items), 3)
        if items
        else 0.0,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trace = args.trace if args.trace.is_absolute() else repo_root() / args.trace
    items = build_workload(load_mooncake(trace), args.start, args.length, args.compression,
                           args.words_per_block, args.max_output_tokens)  # fmt: skip
    endpoints = [f"engine-{i}" for i in range(args.engines)]
    bound = LoadBound(args.prefix_load_bound, args.prefix_load_slack)
    routes: dict[str, Route] = {
        "least-load": lambda in_flight, blocks: least_loaded(in_flight),
        f"prefix-affinity (load bound {bound.relative:g}, slack {bound.slack})": build_prefix_affinity_route(
            endpoints, bound, args.slots
        ),
        "cache-aware model": build_cache_aware_route(endpoints),
    }
    for name, route in routes.items():
        model = compute_routing_model(items, route, endpoints, args.cache_blocks, args.words_per_block,
                                      args.prefill_words_per_second, args.tokens_per_second)  # fmt: skip
        print(f"{name}: {json.dumps(asdict(model))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
