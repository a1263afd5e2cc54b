"""Prefix-affinity routing, pure: send a request where its prompt's leading blocks were sent before.

An engine's prefix cache only saves prefill when requests sharing a prefix land on the replica
that holds it. The gateway cuts each prompt (chat messages rendered in order, "role: content")
into blocks of PREFIX_BLOCK_WORDS words and hashes each block chained to all before it, so a block
hash stands for the whole prompt up to its end. Its index (gateway/prefix_index.py) remembers
which endpoints recently got each block hash and where prompts part: `held` says how many leading
blocks of this request each endpoint holds, `shared` how many lead to a point where other prompts
went on differently (a system prompt many conversations share, or a run every endpoint holds:
neither says where this request belongs). `pick_endpoint_by_match` decides:

1. an endpoint within the load bound that holds more than the shared run takes it: the longest
   match, then the least load (a conversation's later turns go where its first turn went);
2. else, when the shared run is more than half of the prompt (a long document many short
   questions share, or a whole prompt sent before) and some endpoints within the bound hold it and
   some do not, the ring below holds only those that hold it (keyed on the prompt's last block
   when the run is all of it): re-reading the run elsewhere would cost more prefill than the
   spread saves;
3. else the first block past the shared run (hashed with everything before it) is the key on a
   consistent-hash ring with bounded loads: a new conversation goes where every gateway replica
   would send it, and conversations behind one system prompt spread over the replicas;
4. else (no blocks, or a prompt that is all shared run and that every endpoint holds, or none
   within the bound): None, and the caller routes by least load.

The load bound (`LoadBound`): an endpoint is skipped while taking this request would put it above
both (1 + relative) x the mean load and the mean plus `slack` requests, so a hot prefix spills
instead of queueing on one replica, yet a replica holding a hot prefix keeps it for a few
requests more than the others when few are in flight.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX_BLOCK_WORDS = 16
MAX_PREFIX_BLOCKS = 1024
"""Blocks hashed per request at most (16k words): longer prompts are routed on their first 16k."""
RING_POINTS = 64
"""Points per endpoint on the hash ring: enough that keys spread evenly over a few endpoints."""


def prompt_words(body: Mapping[str, Any], chat: bool) -> list[str]:
    """The prompt as the gateway reads it (as the sim engine's prefix cache does): a chat's
    messages rendered "role: content" in order; a completion's prompt as OpenAI takes it, a text,
    a list of texts, token ids or lists of token ids, each token id one word."""
    if chat:
        messages = body.get("messages")
        texts = [
            f"{m.get('role')}: {m.get('content')}"
            for m in (messages if isinstance(messages, list) else [])
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        ]
        return [word for text in texts for word in text.split()]
    prompt = body.get("prompt", "")
    return [word for part in (prompt if isinstance(prompt, list) else [prompt]) for word in _part_words(part)]


def _part_words(part: Any) -> list[str]:
    if isinstance(part, str):
        return part.split()
    if _is_token(part):
        return [str(part)]
    if isinstance(part, list) and all(_is_token(t) for t in part):
        return [str(t) for t in part]
    return []


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prefix_blocks(body: Mapping[str, Any], chat: bool) -> tuple[int, ...]:
    """Chained hashes of the prompt's whole leading blocks: block i's hash covers blocks 0..i.

    CRC-32 and Adler-32 run on (C, and seeded with the previous value), so a block costs two
    library calls and the 64-bit value is the same in every gateway replica."""
    words = prompt_words(body, chat)
    count = min(len(words) // PREFIX_BLOCK_WORDS, MAX_PREFIX_BLOCKS)
    crc, adler, hashes = 0, 1, []
    for i in range(count):
        block = " ".join(words[i * PREFIX_BLOCK_WORDS : (i + 1) * PREFIX_BLOCK_WORDS]).encode() + b"\n"
        crc, adler = zlib.crc32(block, crc), zlib.adler32(block, adler)
        hashes.append(crc << 32 | adler)
    return tuple(hashes)


def _point(key: object) -> int:
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=256)
def build_ring(endpoints: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The consistent-hash ring of `endpoints`: sorted points and the endpoint of each."""
    points = sorted((_point(f"{e}#{i}"), e) for e in endpoints for i in range(RING_POINTS))
    return tuple(p for p, _ in points), tuple(e for _, e in points)


@dataclass(frozen=True)
class LoadBound:
    """How far above the mean load prefix affinity may load an endpoint."""

    relative: float
    """An endpoint may reach (1 + relative) x the mean load, counting this request."""
    slack: int
    """... or the mean plus this many requests, whichever is more. The relative bound alone is two
    or three requests when few are in flight, and an engine's batch takes a few more at almost no
    cost, where reading a held prefix again elsewhere costs its whole prefill."""

    def cap(self, in_flight: Mapping[str, int], candidates: Collection[str], slots: int) -> int:
        """The load an endpoint among `candidates` must be below to take one more request."""
        total, n = sum(in_flight[e] for e in candidates) + 1, len(candidates)
        return min(max(math.ceil((1 + self.relative) * total / n), math.ceil(total / n) + self.slack), slots)


def pick_endpoint_by_prefix(
    in_flight: Mapping[str, int], slots: int, exclude: Collection[str], key: object, bound: LoadBound
) -> str | None:
    """Consistent hashing with bounded loads: the first endpoint clockwise of the key's point whose
    load stays within the bound after this request, with a free slot. None when every endpoint is
    over the bound or full (the caller then falls back to least-load)."""
    candidates = tuple(sorted(e for e in in_flight if e not in exclude))
    if not candidates:
        return None
    cap = bound.cap(in_flight, candidates, slots)
    points, owners = build_ring(candidates)
    start = bisect.bisect(points, _point(key))
    seen: set[str] = set()
    for i in range(len(points)):
        endpoint = owners[(start + i) % len(points)]
        if endpoint in seen:
            continue
        seen.add(endpoint)
        if in_flight[endpoint] < cap:
            return endpoint
        if len(seen) == len(candidates):
            break
    return None


def pick_endpoint_by_match(
    in_flight: Mapping[str, int],
    slots: int,
    exclude: Collection[str],
    blocks: tuple[int, ...],
    held: Mapping[str, int],
    shared: int,
    bound: LoadBound,
) -> str | None:
    """The endpoint for a request with prompt `blocks`, given the leading blocks each endpoint
    holds (`held`, missing = 0) and how many lead to where other prompts part (`shared`); None to
    route by least load (see the module's docstring)."""
    candidates = [e for e in in_flight if e not in exclude]
    if not blocks or not candidates:
        return None
    shared = max(shared, min(held.get(e, 0) for e in candidates))
    cap = bound.cap(in_flight, candidates, slots)
    within = [e for e in candidates if in_flight[e] < cap]
    best = max((held.get(e, 0) for e in within), default=0)
    if best > shared:
        return min((e for e in within if held.get(e, 0) == best), key=lambda e: (in_flight[e], e))
    # Keyed among the endpoints that hold the shared run when it is most of the prompt and some do
    # not hold it: a long document many conversations ask about, or a prompt sent before whole,
    # stays where it is cached, while a system prompt (a small part of each conversation) spreads
    # its conversations over all.
    holders = {e for e in within if held.get(e, 0) >= shared} if 2 * shared > len(blocks) else set()
    if holders and len(holders) < len(candidates):
        lacking = {*exclude, *(e for e in candidates if e not in holders)}
        key = blocks[min(shared, len(blocks) - 1)]
        chosen = pick_endpoint_by_prefix(in_flight, slots, lacking, key, bound)
        if chosen is not None:
            return chosen
    if shared >= len(blocks):
        return None
    return pick_endpoint_by_prefix(in_flight, slots, exclude, blocks[shared], bound)
