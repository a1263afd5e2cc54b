from pathlib import Path

import pytest

from inferfleet.sim.traces import MOONCAKE_BLOCK_TOKENS, load_arrivals, load_mooncake, trace_rate

TRACES = Path(__file__).parents[2] / "traces"


def test_rates_reproduce_the_arrivals_at_any_compression(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:00:{s:02d}.0000000,100,10" for s in (0, 1, 2, 3, 15)]
    trace.write_text("\n".join(rows) + "\n")
    arrivals = load_arrivals(trace)
    assert arrivals == [0.0, 1.0, 2.0, 3.0, 15.0]
    rate = trace_rate(arrivals, bin_seconds=10)
    assert rate(5) == pytest.approx(0.4)  # 4 requests in the first 10 s
    assert rate(12) == pytest.approx(0.1)
    assert rate(30) == 0
    fast = trace_rate(arrivals, compression=10, bin_seconds=10)
    assert fast(0.5) == pytest.approx(4.0)  # the first 10 s of trace in 1 s of replay
    assert trace_rate(arrivals, scale=3, bin_seconds=10)(5) == pytest.approx(1.2)


def test_the_shared_conversation_trace_is_an_hour_of_requests() -> None:
    arrivals = load_arrivals(TRACES / "azure-llm-2023-conv.csv")
    assert 19000 < len(arrivals) < 20000  # the README says 19,365 requests
    assert 3000 < arrivals[-1] <= 3700


def test_the_mooncake_conversation_trace_is_an_hour_with_shared_prefixes() -> None:
    requests = load_mooncake(TRACES / "mooncake-2025-conversation.jsonl.gz")
    assert len(requests) == 12031  # the Mooncake README's count
    assert requests[0].arrival == 0
    assert 3500 < requests[-1].arrival <= 3600
    for r in requests[:100]:
        assert len(r.prefix_blocks) == -(-r.input_tokens // MOONCAKE_BLOCK_TOKENS)
    blocks = [b for r in requests for b in r.prefix_blocks]
    assert len(set(blocks)) < 0.7 * len(blocks)  # over 30 % of prompt blocks are a shared prefix


def test_mooncake_lines_become_requests_sorted_by_arrival(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"timestamp": 1500, "input_length": 600, "output_length": 0, "hash_ids": [0, 2]}\n'
        '{"timestamp": 500, "input_length": 100, "output_length": 7, "hash_ids": [0]}\n'
    )
    first, second = load_mooncake(trace)
    assert (first.arrival, first.input_tokens, first.output_tokens) == (0.0, 100, 7)
    assert first.prefix_blocks == (0,)
    assert (second.arrival, second.output_tokens, second.prefix_blocks) == (1.0, 1, (0, 2))
