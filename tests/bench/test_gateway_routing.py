"""The routing arm's own parts: trace requests rendered as prompts whose engine blocks share what the
trace's blocks share, the workload window, the prefix-cache arithmetic on real /metrics text, the
routing census, the targets, and one tiny run of the harness on a hand-made trace."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from bench.gateway import routing
from bench.gateway.prefix_workload import (
    HITS,
    QUERIES,
    SUCCESS,
    RoutingCensus,
    WorkItem,
    build_workload,
    compute_hit_rate,
    compute_routing_census,
    compute_spread,
    read_by_label,
    read_counters,
    read_workload,
    render_prompt,
    render_prompt_tokens,
    write_workload,
)
from bench.gateway.routing_report import LEAST_LOAD, PREFIX_AFFINITY, ROUND_ROBIN, table, targets

from inferfleet.sim.engine import EngineConfig, PrefixCache, Prompt, SimEngine, block_hashes, prompt_of
from inferfleet.sim.traces import TraceRequest

W = 16


def engine_blocks(item: WorkItem, words_per_block: int = W) -> tuple[int, ...]:
    """The sim engine's prefix-cache keys of the rendered prompt."""
    return block_hashes(render_prompt(item.blocks, item.words, words_per_block).split(), words_per_block)


# --- rendering: the engine's blocks are the trace's blocks ------------------------------------------


def test_rendered_prompts_share_exactly_the_engine_blocks_their_trace_blocks_share() -> None:
    first = WorkItem(0, (0, 1, 2, 3), 4 * W, 1)
    next_turn = WorkItem(0, (0, 1, 2, 7, 8), 5 * W, 1)  # the same session, diverging at block 3
    other = WorkItem(0, (0, 5, 2, 3), 4 * W, 1)  # the shared system prompt only
    a, b, c = engine_blocks(first), engine_blocks(next_turn), engine_blocks(other)
    assert (len(a), len(b), len(c)) == (4, 5, 4)
    assert a[:3] == b[:3]
    assert a[3] != b[3]
    assert a[0] == c[0]
    assert not set(a[1:]) & set(c)
    # block 2 of `other` has the same id as in `first` but another prefix: a different engine key
    assert a[2] != c[2]


def test_an_engine_prefix_cache_hits_the_shared_leading_blocks_in_words() -> None:
    cache = PrefixCache(capacity=100, block_tokens=W)
    first = WorkItem(0, (0, 1, 2), 3 * W, 1)
    second = WorkItem(0, (0, 1, 9, 10), 3 * W + 5, 1)  # last block partial: 5 words, not cached
    assert cache.admit(Prompt(first.words, engine_blocks(first))) == 0
    assert cache.admit(Prompt(second.words, engine_blocks(second))) == 2 * W
    assert (cache.queried_tokens, cache.hit_tokens) == (6 * W + 5, 2 * W)


def test_render_prompt_cuts_the_last_block_at_the_prompt_length() -> None:
    assert render_prompt((10, 11), 3, 2) == "a_0 a_1 b_0"
    assert render_prompt((10, 11), 0, 2) == ""
    assert render_prompt_tokens((10, 11), 3, 2) == [20, 21, 22]
    assert render_prompt_tokens((10, 11), 0, 2) == []


def test_token_prompts_share_exactly_the_engine_blocks_the_text_prompts_share() -> None:
    items = [WorkItem(0, (0, 1, 2, 3), 4 * W, 1), WorkItem(0, (0, 1, 2, 7, 8), 5 * W - 3, 1),
             WorkItem(0, (0, 5, 2, 3), 4 * W, 1), WorkItem(0, (1, 0), 2 * W, 1)]  # fmt: skip

    def token_blocks(item: WorkItem) -> tuple[int, ...]:
        ids = render_prompt_tokens(item.blocks, item.words, W)
        return prompt_of({"prompt": ids}, chat=False, block_tokens=W).blocks

    by_text, by_tokens = [engine_blocks(i) for i in items], [token_blocks(i) for i in items]
    for (a, b), (x, y) in zip(
        itertools.combinations(by_text, 2), itertools.combinations(by_tokens, 2), strict=True
    ):
        assert [u == v for u, v in zip(a, b, strict=False)] == [u == v for u, v in zip(x, y, strict=False)]
    assert [len(b) for b in by_tokens] == [len(b) for b in by_text] == [4, 4, 4, 2]


def test_build_workload_takes_a_window_compresses_time_and_scales_lengths() -> None:
    trace = [
        TraceRequest(5.0, 1000, 100, (0, 1)),
        TraceRequest(10.0, 1536, 2000, (0, 1, 2)),
        TraceRequest(40.0, 600, 10, (0, 3)),
        TraceRequest(70.0, 600, 10, (0, 4)),  # after the window
    ]
    items = build_workload(trace, start=10.0, length=60.0, compression=10.0, words_per_block=16,
                           max_output_tokens=32)  # fmt: skip
    assert items == [
        WorkItem(0.0, (0, 1, 2), 48, 32),  # 1536 tokens = 3 whole blocks; 2000 output tokens capped at 32
        WorkItem(3.0, (0, 3), 19, 1),  # 600 tokens x 16/512 = 18.75 -> 19 words; 10 tokens -> 1
    ]


def test_workload_file_round_trips(tmp_path: Path) -> None:
    items = [WorkItem(0.5, (0, 1), 20, 3), WorkItem(1.0, (0, 2, 3), 40, 1)]
    write_workload(items, tmp_path / "w.jsonl")
    assert read_workload(tmp_path / "w.jsonl") == items


# --- counters: from a real engine's /metrics to the hit rate ----------------------------------------


def test_hit_rate_from_a_real_engines_metrics() -> None:
    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        engine = await SimEngine(
            EngineConfig("m", tokens_per_second=200, host="127.0.0.1", port=0, block_tokens=W)
        ).start_async()
        loop = asyncio.get_running_loop()

        def get_metrics() -> dict[str, float]:
            with urllib.request.urlopen(engine.url + "/metrics", timeout=5) as r:
                return read_counters(r.read().decode())

        def post(item: WorkItem) -> None:
            body = {"model": "m", "prompt": render_prompt(item.blocks, item.words, W), "max_tokens": 1}
            request = urllib.request.Request(engine.url + "/v1/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            urllib.request.urlopen(request, timeout=5).read()

        before = await loop.run_in_executor(None, get_metrics)
        await loop.run_in_executor(None, post, WorkItem(0, (0, 1, 2), 3 * W, 1))
        await loop.run_in_executor(None, post, WorkItem(0, (0, 1, 5, 6), 4 * W, 1))
        after = await loop.run_in_executor(None, get_metrics)
        await engine.stop_async(0)
        return before, after

    before, after = asyncio.run(scenario())
    assert after[QUERIES] - before[QUERIES] == 7 * W
    assert after[HITS] - before[HITS] == 2 * W
    assert after[SUCCESS] - before[SUCCESS] == 2
    assert compute_hit_rate([before], [after]) == pytest.approx(2 / 7)


def test_hit_rate_is_total_hits_over_total_queries_not_a_mean_of_engine_rates() -> None:
    zero = {QUERIES: 0.0, HITS: 0.0, SUCCESS: 0.0}
    busy = {QUERIES: 900.0, HITS: 0.0, SUCCESS: 9.0}  # the mean of rates would be (0 + 1) / 2
    idle = {QUERIES: 100.0, HITS: 100.0, SUCCESS: 1.0}
    assert compute_hit_rate([zero, zero], [busy, idle]) == pytest.approx(0.1)
    assert compute_spread([zero, zero], [busy, idle]) == pytest.approx(9 / 5)
    # counters read before are subtracted
    assert compute_hit_rate([busy, idle], [busy | {QUERIES: 1000.0}, idle]) == 0.0
    assert compute_hit_rate([zero], [zero]) is None


def test_read_counters_and_labels_from_prometheus_text() -> None:
    router = 'vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="regular",outcome='
    text = (
        "# TYPE vllm:prefix_cache_queries counter\n"
        'vllm:prefix_cache_queries_total{model_name="m"} 120.0\n'
        'vllm:prefix_cache_queries_created{model_name="m"} 1.7e9\n'
        'vllm:prefix_cache_hits_total{model_name="m"} 48.0\n'
        f'{router}"missing_tokens"}} 339\n'
        f'{router}"prefix_hit"}} 2\n'
    )
    assert read_counters(text) == {QUERIES: 120.0, HITS: 48.0, SUCCESS: 0.0}
    decisions = read_by_label(text, "vllm_router_prefix_routing_decisions_total", "outcome")
    assert decisions == {"missing_tokens": 339.0, "prefix_hit": 2.0}


# --- where the gateway's prefix affinity sends the rendered workload --------------------------------


def census(items: list[WorkItem], words_per_block: int, system_blocks: int) -> RoutingCensus:
    router = routing.build_census_router(4)
    return compute_routing_census(items, words_per_block, router, session_blocks=system_blocks + 1)


def sessions(count: int, turns: int, system_blocks: int, words_per_block: int = W) -> list[WorkItem]:
    """`count` sessions behind one system prompt of `system_blocks` blocks, `turns` turns each,
    interleaved; every turn adds two blocks to its session's prompt."""
    system = tuple(range(system_blocks))
    items = []
    for turn in range(turns):
        for s in range(count):
            own = tuple(1000 * (s + 1) + b for b in range(2 * (turn + 1)))
            items.append(WorkItem(0, system + own, len(system + own) * words_per_block, 1))
    return items


def test_sessions_behind_one_system_prompt_spread_and_their_turns_stay() -> None:
    result = census(sessions(40, 3, system_blocks=2), W, system_blocks=2)
    assert result.endpoints_used == 4
    assert result.top_endpoint_share < 0.5
    assert result.repeat_turns == 80
    assert result.same_endpoint_as_before == 1.0


def test_at_one_word_per_token_a_system_prompt_inside_one_block_does_not_pin_everything() -> None:
    """The gateway's blocks (16 words) are finer than a trace block (512 words): the system prompt
    every session shares is 32 gateway blocks and the sessions still part after it."""
    result = census(sessions(40, 2, system_blocks=1, words_per_block=512), 512, system_blocks=1)
    assert result.endpoints_used == 4
    assert result.top_endpoint_share < 0.5
    assert result.same_endpoint_as_before == 1.0


# --- the targets and the table ----------------------------------------------------------------------


def arm(name: str, p50: float, p99: float, hit_rate: float) -> dict[str, Any]:
    return {"arm": name, "ran": True, "proxy": "p", "requests": 10, "errors": 0, "ttft_p50_ms": p50,
            "ttft_p99_ms": p99, "hit_rate": hit_rate, "busiest_engine_over_mean": 1.1, "proxy_cpu_s": 1.0,
            "late_p99_s": 0.001}  # fmt: skip


def test_targets_compare_prefix_affinity_with_round_robin_and_least_load() -> None:
    arms = [arm(ROUND_ROBIN, 200.0, 2000.0, 0.1), arm(LEAST_LOAD, 190.0, 1900.0, 0.1),
            arm(PREFIX_AFFINITY, 110.0, 1950.0, 0.25)]  # fmt: skip
    lines = targets(arms)
    assert [(t["value"], t["verdict"]) for t in lines] == [(0.55, "PASS"), (2.5, "PASS"), (1.026, "FAIL")]
    missing = targets([a for a in arms if a["arm"] != ROUND_ROBIN])
    assert [t["verdict"] for t in missing] == ["n/a", "n/a", "FAIL"]
    text = table({"arms": arms, "targets": lines, "params": {}})
    assert "PASS: prefix-affinity TTFT p50 <= 0.6x round-robin's: 0.55" in text
    assert "FAIL: prefix-affinity TTFT p99 <= least-load's (ratio): 1.026" in text


# --- a tiny run of the harness ------------------------------------------------------------------------


@pytest.mark.parametrize("prompts", ["tokens", "text"])
def test_a_tiny_routing_run_on_one_engine_measures_the_exact_hit_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prompts: str
) -> None:
    rows = [
        {"timestamp": 0, "input_length": 1536, "output_length": 64, "hash_ids": [0, 1, 2]},
        {"timestamp": 400, "input_length": 2000, "output_length": 64, "hash_ids": [0, 1, 2, 3]},
        {"timestamp": 800, "input_length": 1024, "output_length": 64, "hash_ids": [0, 5]},
    ]
    trace = tmp_path / "trace.jsonl.gz"
    with gzip.open(trace, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    code = routing.main(["--arms", f"{LEAST_LOAD},{PREFIX_AFFINITY}", "--trace", str(trace), "--engines", "1",
                         "--compression", "1", "--prefill-words-per-second", "2000", "--prompts", prompts,
                         "--workdir", str(tmp_path / "work"), "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    # words 48, 63 (2000 x 16/512 = 62.5), 32; hits: none, 3 blocks, block 0: 64 of 143 words
    for figures in report["arms"]:
        assert (figures["requests"], figures["errors"]) == (3, 0)
        assert figures["hit_rate"] == round(64 / 143, 4)
    assert [t["verdict"] for t in report["targets"]][:2] == ["n/a", "n/a"]  # no round-robin arm


def test_cache_model_counts_the_leading_cached_blocks_per_cache_with_lru_eviction() -> None:
    from bench.gateway.prefix_workload import compute_cache_model

    turns = [WorkItem(0, (0, 1), 2 * W, 1), WorkItem(1, (0, 2), 2 * W, 1), WorkItem(2, (0, 1, 3), 3 * W, 1)]
    one = compute_cache_model(turns, lambda i, item: 0, 1, 100, W)
    assert (one.hit_rate, one.uncached_p50_words) == (round(3 * W / (7 * W), 4), W)  # hits: 0, 1, 2 blocks
    apart = compute_cache_model(turns, lambda i, item: min(i, 1), 2, 100, W)  # turn 3 away from turn 1
    assert apart.hit_rate == round(1 * W / (7 * W), 4)  # it finds only block 0 there
    tiny = compute_cache_model(turns, lambda i, item: 0, 1, 2, W)  # 2 blocks: (0, 1) evicted by (0, 2)
    assert tiny.hit_rate == round(2 * W / (7 * W), 4)
