"""The simulated engine's KV cache: running requests hold blocks, a prompt that does not fit waits;
real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable

from inferfleet.localcluster.waiting import wait_for
from inferfleet.sim.engine import SimEngine
from tests.unit.test_sim_engine import in_background, post, queue_metrics
from tests.unit.test_sim_engine_prefix import words

# 4 words a block, 10 blocks: a 13-word prompt takes 4 blocks (the last one partly), two fit.
KV = {"block_tokens": 4, "kv_cache_tokens": 40, "max_concurrent": 8, "tokens_per_second": 2}


def send(engine: SimEngine, name: str, max_tokens: int) -> None:
    """A 13-word prompt in the background; its answer is not waited for."""
    body = {"prompt": words(name, 13), "max_tokens": max_tokens}
    in_background(lambda: post(f"{engine.url}/v1/completions", body))


def test_a_prompt_that_does_not_fit_the_free_kv_cache_waits_with_slots_free(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(**KV)
    send(engine, "a", 200)  # runs for the whole test: 100 s at 2 tokens a second
    wait_for(lambda: engine.counts().running == 1, timeout=10, what="a running")
    send(engine, "b", 4)  # 2 s
    wait_for(lambda: engine.counts().running == 2, timeout=10, what="b running")
    send(engine, "c", 1)
    wait_for(lambda: engine.counts().waiting == 1, timeout=10, what="c waiting")

    found = queue_metrics(engine.url)
    assert found["vllm:num_requests_running"] == 2  # of 8 slots
    assert found["vllm:num_requests_waiting"] == 1
    assert found["vllm:kv_cache_usage_perc"] >= 0.8  # 8 blocks of 10, and a's output growing

    # b ends and frees its 4 blocks: a holds at most 5 by then, so c fits and runs
    wait_for(lambda: engine.counts().succeeded == 2, timeout=10, what="b and then c to finish")
    counts = engine.counts()
    assert (counts.running, counts.waiting) == (1, 0)
    assert 0.4 <= queue_metrics(engine.url)["vllm:kv_cache_usage_perc"] <= 0.6  # a alone: 5 of 10


def test_a_prompt_larger_than_the_kv_cache_still_runs_alone(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(**{**KV, "tokens_per_second": 100})
    status, _ = post(f"{engine.url}/v1/completions", {"prompt": words("x", 60), "max_tokens": 2})
    assert status == 200
    assert queue_metrics(engine.url)["vllm:kv_cache_usage_perc"] == 0.0  # nothing runs now


def test_by_default_the_kv_cache_is_the_prefix_caches_size(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(block_tokens=4, cache_blocks=10, max_concurrent=8, tokens_per_second=2)
    for name in ("a", "b", "c"):
        send(engine, name, 200)
    wait_for(lambda: engine.counts().waiting == 1, timeout=10, what="the third prompt to wait")
    assert engine.counts().running == 2
