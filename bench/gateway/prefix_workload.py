"""The routing arm's workload: Mooncake trace requests as prompts whose word blocks share what the
trace's blocks share, and the prefix-cache arithmetic (pure).

A Mooncake request lists `hash_ids`, its prompt's 512-token blocks; equal ids mean an equal prefix
up to that block's end (multi-turn sessions, shared system prompts). The bench scales 512 trace
tokens down to `words_per_block` words, so prompts stay small over HTTP: block id k becomes the
words `{k:x}_0 ... {k:x}_{W-1}` (the last block only as many of them as the request's length
reaches). With the sim engine's `--block-tokens` equal to `words_per_block`, engine block i of a
prompt is trace block i, and its key (a hash of every word up to its end) is equal for two prompts
exactly when their ids are equal up to i: the engine's prefix cache sees the trace's sharing.
"""

from __future__ import annotations

import json
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inferfleet.sim.traces import MOONCAKE_BLOCK_TOKENS, TraceRequest

QUERIES, HITS = "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"
SUCCESS = "vllm:request_success"


@dataclass(frozen=True)
class WorkItem:
    """One request of the replay: when it is sent and what its prompt is made of."""

    at: float
    """Seconds from the replay's start."""
    blocks: tuple[int, ...]
    """The trace's block ids (the prompt-block hashes of the workload file)."""
    words: int
    """Prompt length in words: every block full but maybe the last."""
    max_tokens: int


def build_workload(
    requests: Iterable[TraceRequest],
    start: float,
    length: float,
    compression: float,
    words_per_block: int,
    max_output_tokens: int,
) -> list[WorkItem]:
    """The trace's requests arriving in [start, start + length) of trace time, replayed
    `compression` times faster; prompt and output lengths scaled by words_per_block / 512."""
    scale = words_per_block / MOONCAKE_BLOCK_TOKENS
    items = []
    for r in requests:
        if not (start <= r.arrival < start + length) or not r.prefix_blocks:
            continue
        words = min(max(1, math.ceil(r.input_tokens * scale)), len(r.prefix_blocks) * words_per_block)
        output = min(max(1, math.ceil(r.output_tokens * scale)), max_output_tokens)
        items.append(WorkItem((r.arrival - start) / compression, r.prefix_blocks, words, output))
    return sorted(items, key=lambda w: w.at)


def prompt_positions(blocks: Sequence[int], words: int, words_per_block: int) -> list[tuple[int, int]]:
    """(block id, position in its block) of each of the prompt's `words` words: every block full
    but maybe the last, cut at the prompt's length."""
    return [(block, i) for block in blocks for i in range(words_per_block)][: max(words, 0)]


def render_prompt(blocks: Sequence[int], words: int, words_per_block: int) -> str:
    """The prompt of `words` words whose i-th block of `words_per_block` words stands for blocks[i]."""
    return " ".join(f"{block:x}_{i}" for block, i in prompt_positions(blocks, words, words_per_block))


def render_prompt_tokens(blocks: Sequence[int], words: int, words_per_block: int) -> list[int]:
    """The same prompt as token ids, as a client that tokenizes sends it (OpenAI's `prompt` as a
    list of ints): word i of block k is id k * words_per_block + i, so two prompts share a run of
    ids exactly where their words are shared."""
    return [block * words_per_block + i for block, i in prompt_positions(blocks, words, words_per_block)]


def write_workload(items: Sequence[WorkItem], path: Path) -> None:
    with path.open("w") as f:
        for item in items:
            f.write(json.dumps(asdict(item)) + "\n")


def read_workload(path: Path) -> list[WorkItem]:
    with path.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [WorkItem(r["at"], tuple(r["blocks"]), r["words"], r["max_tokens"]) for r in rows]


def read_counters(text: str, names: Sequence[str] = (QUERIES, HITS, SUCCESS)) -> dict[str, float]:
    """Each counter's sum over its samples in Prometheus text (`name` or `name_total`, any labels)."""
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        name = sample.split("{", 1)[0]
        base = name.removesuffix("_total")
        if base in sums and not name.endswith("_created"):
            sums[base] += float(value)
    return sums


def read_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """A counter's samples summed by one label's value (e.g. vllm-router's routing decisions by outcome)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name.removesuffix("_total") + "{"):
            continue
        sample, _, value = line.rpartition(" ")
        labels = dict(
            pair.split("=", 1) for pair in sample.split("{", 1)[1].rstrip("}").split(",") if "=" in pair
        )
        key = labels.get(label, "").strip('"')
        sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def compute_hit_rate(
    before: Sequence[Mapping[str, float]], after: Sequence[Mapping[str, float]]
) -> float | None:
    """Prefix-cache hit rate over a phase, all engines: the sum of hit tokens over the sum of queried
    tokens, each counter taken after minus before (vLLM's own definition, fleet-wide)."""
    queries = sum(a[QUERIES] - b[QUERIES] for b, a in zip(before, after, strict=True))
    hits = sum(a[HITS] - b[HITS] for b, a in zip(before, after, strict=True))
    return None if queries <= 0 else hits / queries


def compute_spread(
    before: Sequence[Mapping[str, float]], after: Sequence[Mapping[str, float]]
) -> float | None:
    """Requests of the busiest engine over the mean per engine (1.0: an even spread)."""
    served = [a[SUCCESS] - b[SUCCESS] for b, a in zip(before, after, strict=True)]
    mean = sum(served) / len(served) if served else 0.0
    return None if mean <= 0 else max(served) / mean


@dataclass(frozen=True)
class RoutingCensus:
    """Where a router sends the workload's requests, replayed without load or time."""

    requests: int
    endpoints_used: int
    top_endpoint_share: float
    """Share of the requests on the busiest endpoint: 1.0 sends everything to one replica."""
    repeat_turns: int
    """Requests sharing at least `session_blocks` leading blocks with an earlier request."""
    same_endpoint_as_before: float
    """Of those, the share sent where the last such earlier request went."""


def compute_routing_census(
    items: Sequence[WorkItem],
    words_per_block: int,
    route: Callable[[str], str | None],
    session_blocks: int = 2,
) -> RoutingCensus:
    """Each rendered prompt through `route` in order; turns of one session are requests sharing
    their first `session_blocks` trace blocks."""
    counts: Counter[str] = Counter()
    last: dict[tuple[int, ...], str | None] = {}
    repeats = same = 0
    for item in items:
        endpoint = route(render_prompt(item.blocks, item.words, words_per_block))
        if endpoint is not None:
            counts[endpoint] += 1
        if len(item.blocks) < session_blocks:
            continue
        session = item.blocks[:session_blocks]
        if session in last:
            repeats += 1
            same += endpoint is not None and last[session] == endpoint
        last[session] = endpoint
    routed = sum(counts.values())
    return RoutingCensus(
        requests=len(items),
        endpoints_used=len(counts),
        top_endpoint_share=round(counts.most_common(1)[0][1] / routed, 4) if routed else 0.0,
        repeat_turns=repeats,
        same_endpoint_as_before=round(same / repeats, 4) if repeats else 0.0,
    )


def census_json(census: RoutingCensus) -> dict[str, Any]:
    return asdict(census)


@dataclass(frozen=True)
class CacheModel:
    """What LRU prefix caches would give a routing of the workload, without engines or time."""

    hit_rate: float
    uncached_p50_words: int
    uncached_p99_words: int


def cached_run(
    lru: OrderedDict[tuple[int, ...], None], item: WorkItem, words_per_block: int, cache_blocks: int
) -> int:
    """`item` on an engine whose prefix cache is `lru`, kept as the sim engine keeps it (whole
    blocks, LRU, at most `cache_blocks`): the leading run of its blocks that was cached. Updates
    `lru`."""
    keys = [item.blocks[: n + 1] for n in range(min(len(item.blocks), item.words // words_per_block))]
    run = next((n for n, key in enumerate(keys) if key not in lru), len(keys))
    for key in keys:
        lru[key] = None
        lru.move_to_end(key)
    while len(lru) > cache_blocks:
        lru.popitem(last=False)
    return run


def compute_cache_model(
    items: Sequence[WorkItem], assign: Callable[[int, WorkItem], int], caches: int, cache_blocks: int,
    words_per_block: int,
) -> CacheModel:  # fmt: skip
    """Replay the workload in arrival order through `caches` LRU caches as the engine keeps them
    (whole blocks, a hit is the leading run of cached blocks), request i going to assign(i, item)."""
    lrus: list[OrderedDict[tuple[int, ...], None]] = [OrderedDict() for _ in range(caches)]
    queried = hit = 0
    uncached = []
    for i, item in enumerate(items):
        run = cached_run(lrus[assign(i, item)], item, words_per_block, cache_blocks)
        queried, hit = queried + item.words, hit + run * words_per_block
        uncached.append(item.words - run * words_per_block)
    uncached.sort()
    nearest = [uncached[max(0, math.ceil(q * len(uncached)) - 1)] if uncached else 0 for q in (0.5, 0.99)]
    return CacheModel(round(hit / queried, 4) if queried else 0.0, nearest[0], nearest[1])
