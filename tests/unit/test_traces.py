from pathlib import Path

import pytest

from inferfleet.sim.traces import load_arrivals, trace_rate

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
