"""Which endpoints recently got each prompt block: the gateway's view of its engines' prefix caches.

It learns only from its own routing (engines do not say what they cache), keeps the most recently
used MAX_BLOCKS block hashes per service, and is approximate by design: an engine may have evicted
a block the index still lists, which costs one cache miss, never a wrong answer.

Each block also remembers a few blocks seen right after it. A block followed by different blocks
in different prompts is where those prompts part (the end of a system prompt many conversations
share): the run up to there is `shared`, and says nothing about where this request belongs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

MAX_BLOCKS = 65536
"""Block hashes remembered per service (a few MB): more than four replicas' caches of 16k tokens."""
MAX_CHILDREN = 2
"""Successors kept per block: two different ones already make it a branch point."""


@dataclass
class _Block:
    holders: set[str] = field(default_factory=set)
    children: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class PrefixMatch:
    held: dict[str, int]
    """Per endpoint, how many of the request's leading blocks it got before (a run from the start)."""
    shared: int
    """Leading blocks the request shares with other prompts that went on differently."""


class PrefixIndex:
    def __init__(self, capacity: int = MAX_BLOCKS) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, _Block] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, blocks: tuple[int, ...], endpoints: Collection[str]) -> PrefixMatch:
        held = dict.fromkeys(endpoints, 0)
        active, shared = set(endpoints), 0
        for i, block in enumerate(blocks):
            entry = self._blocks.get(block)
            if entry is None:
                break
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            if entry.children - {following}:
                shared = i + 1
            for gone in active - entry.holders:
                held[gone] = i
            active &= entry.holders
            for endpoint in active:
                held[endpoint] = i + 1
        return PrefixMatch(held, shared)

    def record(self, blocks: tuple[int, ...], endpoint: str) -> None:
        """`endpoint` got a request with `blocks`: its cache now holds them, most recent first."""
        for i, block in enumerate(blocks):
            entry = self._blocks.get(block)
            if entry is None:
                entry = self._blocks[block] = _Block()
            else:
                self._blocks.move_to_end(block)
            entry.holders.add(endpoint)
            if i + 1 < len(blocks) and len(entry.children) < MAX_CHILDREN:
                entry.children.add(blocks[i + 1])
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
