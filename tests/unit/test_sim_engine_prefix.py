"""The simulated engine's prefix cache: block keys, LRU, prefill time, metrics; real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferfleet.sim.engine import PrefixCache, Prompt, SimEngine, block_hashes

MODEL = "tiny"


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def time_to_first_token(engine: SimEngine, path: str, body: dict[str, Any]) -> float:
    """Seconds from sending a streamed request to its first event; the stream is then read to its end."""
    host, port = engine.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        sent = time.monotonic()
        payload = json.dumps({**body, "stream": True, "max_tokens": 2})
        connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        while not (line := response.readline()).startswith(b"data: "):
            assert line, "the stream ended before its first token"
        first = time.monotonic() - sent
        assert response.read().rstrip().endswith(b"data: [DONE]")
        return first
    finally:
        connection.close()


def complete(engine: SimEngine, path: str, body: dict[str, Any]) -> None:
    data = json.dumps({**body, "max_tokens": 1}).encode()
    request = urllib.request.Request(engine.url + path, data=data, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def hits_of(engine: SimEngine, path: str, body: dict[str, Any]) -> int:
    """The prompt tokens of one request found in the engine's prefix cache."""
    before = engine.counts().prefix_hit_tokens
    complete(engine, path, body)
    return engine.counts().prefix_hit_tokens - before


def chat(system: str, user: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def test_block_keys_chain_every_word_up_to_the_end_of_the_block() -> None:
    base = words("w", 8).split()
    keys = block_hashes(base, 3)
    assert len(keys) == 2  # the trailing partial block (2 words) is never cached
    assert block_hashes([*base, "more"], 3)[:2] == keys  # a longer prompt keeps its prefix's keys
    assert block_hashes(base[:3] + ["y"] * 5, 3) == (keys[0], block_hashes(base[:3] + ["y"] * 3, 3)[1])
    # The same words in the second block after a different first block: a different key.
    assert block_hashes(["x", *base[1:]], 3)[1] != keys[1]


A, B, C, D = (Prompt(4, (k,)) for k in (1, 2, 3, 4))


@pytest.mark.parametrize(
    ("capacity", "prompts", "hit_tokens"),
    [
        ([8], [Prompt(10, (1, 2)), Prompt(12, (1, 2, 3))], [0, 8]),
        # Only the leading cached blocks count: block 2 alone is no hit.
        ([8], [Prompt(8, (1, 2)), Prompt(8, (9, 2))], [0, 0]),
        # At capacity the least recently used block goes; a hit refreshes it.
        ([2], [A, B, A, C, A, B], [0, 0, 4, 0, 4, 0]),
        ([3], [A, B, C, D, A], [0, 0, 0, 0, 0]),
        ([0], [A, A], [0, 0]),
    ],
)
def test_the_lru_of_blocks(capacity: list[int], prompts: list[Prompt], hit_tokens: list[int]) -> None:
    cache = PrefixCache(capacity[0], block_tokens=4)
    assert [cache.admit(p) for p in prompts] == hit_tokens
    assert len(cache.blocks) <= capacity[0]
    assert (cache.queried_tokens, cache.hit_tokens) == (sum(p.words for p in prompts), sum(hit_tokens))


def test_a_repeated_long_prompt_hits_every_full_block_and_skips_their_prefill(
    start_engine: Callable[..., SimEngine],
) -> None:
    rate = 1000.0  # prefill tokens per second
    engine = start_engine(block_tokens=8, prefill_tokens_per_second=rate, tokens_per_second=100)
    body = {"prompt": words("p", 403)}  # 50 full blocks, 3 words in a partial one
    cold = time_to_first_token(engine, "/v1/completions", body)
    warm = time_to_first_token(engine, "/v1/completions", body)

    saved = 400 / rate
    assert cold >= 403 / rate
    assert 0.75 * saved <= cold - warm <= 1.5 * saved
    counts = engine.counts()
    assert (counts.prompt_tokens, counts.prefix_hit_tokens) == (806, 400)


def test_without_a_prefill_rate_a_long_prompt_costs_no_time(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(block_tokens=8, tokens_per_second=100)
    first = time_to_first_token(engine, "/v1/completions", {"prompt": words("p", 5000)})
    assert first < 0.5  # 5000 tokens at the 1000/s of the test above would be 5 s
    assert engine.counts().prompt_tokens == 5000


def test_a_shared_system_prompt_hits_only_its_own_blocks(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(block_tokens=8)
    system = words("s", 39)  # "system:" and 39 words: exactly 5 blocks
    path = "/v1/chat/completions"
    assert hits_of(engine, path, chat(system, words("first", 20))) == 0
    assert hits_of(engine, path, chat(system, words("second", 20))) == 40
    assert hits_of(engine, path, chat(system, words("first", 20))) == 56  # the whole first turn: 7 blocks
    assert hits_of(engine, path, chat(words("other", 39), words("first", 20))) == 0


def test_the_least_recently_used_prompt_is_evicted_at_capacity(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(block_tokens=2, cache_blocks=4)
    a, b, c = ({"prompt": words(p, 4)} for p in "abc")  # 2 blocks each
    path = "/v1/completions"
    assert [hits_of(engine, path, p) for p in (a, b, a)] == [0, 0, 4]  # a refreshed: b is now the oldest
    assert hits_of(engine, path, c) == 0  # evicts b
    assert engine.counts().cached_blocks == 4
    assert [hits_of(engine, path, p) for p in (a, c, b)] == [4, 4, 0]


def metrics(engine: SimEngine) -> dict[str, tuple[str, dict[str, str], float]]:
    """Each sample by name: its family's type, labels and value."""
    with urllib.request.urlopen(f"{engine.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: (family.type, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_prefix_cache_metrics_carry_vllms_names(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(block_tokens=4, cache_blocks=10)
    for _ in range(2):
        complete(engine, "/v1/completions", {"prompt": words("m", 13)})  # 3 full blocks

    found = metrics(engine)
    labels = {"model_name": MODEL}
    assert found["vllm:prefix_cache_queries_total"] == ("counter", labels, 26)
    assert found["vllm:prefix_cache_hits_total"] == ("counter", labels, 12)
    # the 3 cached blocks of finished requests are evictable, not used: vLLM reports 0
    assert found["vllm:kv_cache_usage_perc"] == ("gauge", labels, 0.0)
    assert engine.counts().cached_blocks == 3
