"""The gateway benchmark's own parts: SSE framing, statistics, CPU accounting, the report, the load
generator against a real sim engine, and one tiny run of the whole harness."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.gateway import cli, cpu, loadgen, vllm_router
from bench.gateway.arms import Ports, gateway_arm, vllm_router_arm
from bench.gateway.cost_split import CostSplit, compute_cost_split
from bench.gateway.rates import (
    MACHINE_BOUND,
    MET,
    MISSED,
    UNKNOWN,
    UNMET_BY_ALL,
    compute_rate_verdict,
    summary_line,
)
from bench.gateway.report import table, targets, with_added
from bench.gateway.run import Load, loadgen_command
from bench.gateway.sse import SSEFramer
from bench.gateway.stats import (
    Record,
    count_errors,
    cpu_per_1k_chunks,
    percentile,
    summarize,
    window_chunk_rate,
)

from inferfleet.sim.engine import EngineConfig, SimEngine

# An OpenAI completions stream as the API sends it: two chunks, a usage chunk, [DONE].
CHUNK = '{"id":"cmpl-1","object":"text_completion","choices":[%s]%s}'
OPENAI_STREAM = (
    "data: " + CHUNK % ('{"index":0,"text":"Hello","finish_reason":null}', "") + "\n\n"
    "data: " + CHUNK % ('{"index":0,"text":" world","finish_reason":"length"}', "") + "\n\n"
    "data: " + CHUNK % ("", ',"usage":{"prompt_tokens":1,"completion_tokens":2}') + "\n\n"
    "data: [DONE]\n\n"
).encode()


# --- SSE -------------------------------------------------------------------------------------


def test_sse_events_are_counted_wherever_the_bytes_are_split() -> None:
    for cut in range(len(OPENAI_STREAM) + 1):
        framer = SSEFramer(keep=True)
        framer.feed(OPENAI_STREAM[:cut])
        framer.feed(OPENAI_STREAM[cut:])
        assert (framer.chunks, framer.done, framer.pending) == (3, True, b""), cut
        assert [json.loads(d)["id"] for d in framer.data] == ["cmpl-1"] * 3


def test_sse_crlf_lines_split_across_pieces_and_comments() -> None:
    framer = SSEFramer(keep=True)
    text = b': keep-alive\r\n\r\ndata: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    for i in range(len(text)):  # one byte at a time: every CR is followed by its LF in the next piece
        framer.feed(text[i : i + 1])
    assert (framer.data, framer.done) == (['{"a":1}'], True)


def test_sse_stream_cut_mid_event_is_not_done() -> None:
    framer = SSEFramer()
    second = OPENAI_STREAM.index(b"\n\n") + 2
    framer.feed(OPENAI_STREAM[: second + 20])
    assert (framer.chunks, framer.done) == (1, False)
    assert framer.pending == OPENAI_STREAM[second : second + 20]


# --- statistics --------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 99) is None


def test_summary_measures_the_window_and_counts_every_chunk() -> None:
    records = [
        Record(0, 0.5, 0.51, 1.5, 10, 200, True),  # warm-up: chunks count (CPU covers them), latency not
        Record(0, 2.0, 2.02, 3.0, 10, 200, True),
        Record(1, 2.5, 2.53, 3.6, 10, 200, True),
        Record(2, 3.0, None, 3.1, 0, 503, False),
        Record(0, 9.0, 9.01, 10.0, 10, 200, True),  # started after the window
    ]
    summary = summarize(records, (1.0, 5.0))
    assert (summary.requests, summary.errors, summary.chunks) == (3, 1, 40)
    assert (summary.ttfb_p50_ms, summary.ttfb_p99_ms) == (20.0, 30.0)
    assert (summary.latency_p50_ms, summary.latency_p99_ms) == (1000.0, 1100.0)
    assert count_errors(records) == {"503": 1}


def test_errors_by_kind() -> None:
    records = [Record(0, 0, None, 1, 0, 0, False), Record(0, 0, 0.1, 1, 3, 200, False)]
    assert count_errors(records) == {"no response": 1, "incomplete": 1}


def test_cpu_per_1k_chunks() -> None:
    assert cpu_per_1k_chunks(2.0, 50_000) == 0.04
    assert cpu_per_1k_chunks(1.0, 0) is None
    assert cpu_per_1k_chunks(None, 10) is None


# --- CPU accounting ------------------------------------------------------------------------------


def _phase(requests: int, chunks: int, per_request_us: float, per_chunk_us: float) -> dict[str, Any]:
    cpu = (requests * per_request_us + chunks * per_chunk_us) / 1e6
    return {"requests_sent": requests, "chunks": chunks, "proxy_cpu_s": cpu}


@pytest.mark.parametrize(
    ("long", "short", "expected"),
    [
        # 50 and 2 chunks a request; 500 µs a request and 20 µs a chunk come back out
        (_phase(800, 40_000, 500, 20), _phase(8_000, 16_000, 500, 20), CostSplit("x", 500.0, 20.0)),
        # a proxy that costs nothing per request
        (_phase(800, 40_000, 0, 12.5), _phase(8_000, 16_000, 0, 12.5), CostSplit("x", 0.0, 12.5)),
        # the same chunks per request in both runs: two equations that are one
        (_phase(800, 40_000, 500, 20), _phase(1_600, 80_000, 500, 20), None),
        # the direct arm has no proxy CPU
        ({"requests_sent": 800, "chunks": 40_000, "proxy_cpu_s": None}, _phase(8_000, 16_000, 1, 1), None),
    ],
)
def test_cost_split_solves_per_request_and_per_chunk_cpu(
    long: dict[str, Any], short: dict[str, Any], expected: CostSplit | None
) -> None:
    assert compute_cost_split("x", long, short) == expected


def _streamed(arm: str, added_p99_ms: float | None, cpu_s: float | None, busy: float = 0.5) -> dict[str, Any]:
    # 100,000 chunks over the phase; 12,000 a second in the measured window (the steady state)
    return {"arm": arm, "added_p99_ms": added_p99_ms, "proxy_cpu_s": cpu_s, "chunks": 100_000,
            "window_chunks_per_s": 12_000.0, "machine_busy_share": busy}  # fmt: skip


@pytest.mark.parametrize(
    ("direct_busy", "relays", "verdict", "need"),
    [
        # the gateway within 10 ms: met, whatever the others do; nginx's 15 µs x 12k/s on 2 cores
        (0.6, [("gateway", 6.0, 2.5), ("nginx", 12.0, 1.5)], MET, 0.6 + 0.09),
        # exactly at the target is within it
        (0.6, [("gateway", 10.0, 2.5), ("nginx", 12.0, 1.5)], MET, 0.6 + 0.09),
        # the gateway out, nginx within: the gateway missed a target the machine allows
        (0.6, [("gateway", 14.0, 2.5), ("nginx", 8.0, 1.5)], MISSED, 0.6 + 0.09),
        # nobody within and the machine cannot carry even the cheapest relay: machine-bound
        (
            0.95,
            [("gateway", 400.0, 2.5), ("vllm-router", 300.0, 2.0), ("nginx", 150.0, 1.5)],
            MACHINE_BOUND,
            1.04,
        ),
        # nobody within, but the machine had room on average: not called machine-bound
        (0.6, [("gateway", 40.0, 2.5), ("vllm-router", 30.0, 2.0), ("nginx", 15.0, 1.5)], UNMET_BY_ALL, 0.69),
        # the gateway out and nobody to compare with: unknown, not machine-bound
        (0.95, [("gateway", 400.0, 2.5)], UNKNOWN, 0.95 + 0.15),
    ],
)
def test_rate_verdict_names_who_is_within_the_target_and_what_the_machine_needs(
    direct_busy: float, relays: list[tuple[str, float, float]], verdict: str, need: float
) -> None:
    phases = [_streamed("direct", None, None, busy=direct_busy)]
    phases += [_streamed(arm, p99, cpu) for arm, p99, cpu in relays]
    got = compute_rate_verdict(50, phases, target_ms=10.0, cores=2)
    assert got is not None
    assert (got.verdict, got.need_share, got.direct_chunks_per_second) == (verdict, round(need, 3), 12_000)
    assert got.cheapest_relay == min(relays, key=lambda r: r[2])[0]


def test_rate_verdict_needs_the_direct_arm_and_the_gateway() -> None:
    assert compute_rate_verdict(50, [_streamed("gateway", 5.0, 1.0)], 10.0, 2) is None
    assert (
        compute_rate_verdict(50, [_streamed("direct", None, None), _streamed("nginx", 5.0, 1.0)], 10.0, 2)
        is None
    )


def test_rates_summary_calls_out_a_rate_the_gateway_missed_or_could_not_compare() -> None:
    def at(rate: float, relays: list[tuple[str, float, float]], busy: float = 0.5) -> Any:
        phases = [_streamed("direct", None, None, busy)] + [_streamed(a, p99, cpu) for a, p99, cpu in relays]
        return compute_rate_verdict(rate, phases, 10.0, 2)

    good = [
        at(20, [("gateway", 6.0, 2.5), ("nginx", 12.0, 1.5)]),
        at(50, [("gateway", 400.0, 2.5), ("nginx", 90.0, 1.5)], busy=0.95),
    ]
    line = summary_line(good)
    assert line.startswith("the gateway is within the target at every rate where any relay is")
    assert "machine-bound at 50 tokens/s" in line
    missed = [*good, at(30, [("gateway", 40.0, 2.5), ("nginx", 9.0, 1.5)])]
    assert summary_line(missed).startswith("MISSED at 30 tokens/s")
    alone = [*good, at(30, [("gateway", 40.0, 2.5)])]
    assert summary_line(alone).startswith("UNKNOWN")


def test_window_chunk_rate_counts_the_requests_started_in_the_window() -> None:
    records = [
        Record(0, 0.5, 0.51, 1.5, 10, 200, True),  # warm-up: left out
        Record(0, 2.0, 2.02, 3.0, 10, 200, True),
        Record(1, 4.5, 4.53, 5.6, 30, 200, True),  # ends past the window: counted whole
        Record(0, 9.0, 9.01, 10.0, 10, 200, True),  # started after the window
    ]
    assert window_chunk_rate(records, (1.0, 5.0)) == 10.0
    assert window_chunk_rate(records, (5.0, 5.0)) == 0.0


def test_parse_stat_with_spaces_and_parentheses_in_the_name() -> None:
    fields = " ".join(str(v) for v in range(4, 53))  # fields 4.. of proc(5): ppid=4, utime=14, stime=15
    stat = cpu.parse_stat(f"4242 (my (odd) proc) S {fields}")
    assert (stat.pid, stat.ppid, stat.utime, stat.stime) == (4242, 4, 14, 15)


def test_descendants_follow_the_whole_tree_only() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20}
    assert cpu.descendants(10, parents) == {10, 11, 12}
    assert cpu.descendants(12, parents) == {12}


def test_machine_times_from_proc_stat() -> None:
    tick = cpu.CLOCK_TICKS
    text = f"cpu  {3 * tick} 0 {tick} {4 * tick} {2 * tick} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    assert cpu.parse_proc_stat(text) == cpu.MachineTimes(busy=4.0, total=10.0)


def test_process_cpu_counts_a_busy_grandchild() -> None:
    """The proxy's own CPU and its children's: a shell whose child burns 0.6 s of CPU, then idles.

    The kernel counts CPU time in ticks, so the reading may fall a tick or so short of what the
    program measured itself: the bounds allow 0.1 s below."""
    program = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    program += 'print("burned", flush=True)\nsys.stdin.read()'
    shell = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c '{program}'; true"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline() == b"burned\n"  # it burned its CPU and waits on stdin now
        seconds = cpu.process_cpu_seconds([shell.pid])
        assert 0.5 <= seconds < 1.5
    finally:
        assert shell.stdin is not None
        shell.stdin.close()
        shell.wait(10)


# --- arms, commands ----------------------------------------------------------------------------------


def test_arm_commands() -> None:
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    gw = gateway_arm("m", urls, Ports(8080, 8081), slots=64)
    assert gw.command[gw.command.index("--static-endpoints") + 1] == "m=http://127.0.0.1:1,http://127.0.0.1:2"
    assert gw.command[gw.command.index("--static-slots") + 1] == "64"
    assert (gw.targets, gw.ready_url) == (["http://127.0.0.1:8080"], "http://127.0.0.1:8081/readyz")
    assert gw.command[gw.command.index("--workers") + 1] == "1"
    assert gateway_arm("m", urls, Ports(8080, 8081), slots=64, workers=2).command[-2:] == ["--workers", "2"]
    profiled = gateway_arm("m", urls, Ports(8080, 8081), slots=64, profile=Path("/tmp/g.txt"))
    assert profiled.command[0].endswith("py-spy")
    assert profiled.command[profiled.command.index("--output") + 1] == "/tmp/g.txt"
    assert "--subprocesses" in profiled.command  # every worker's stacks
    assert profiled.command[profiled.command.index("--") + 1 :][:3] == [sys.executable, "-m", "inferfleet"]
    assert profiled.stop_signal == signal.SIGINT  # py-spy writes its samples when interrupted
    vr = vllm_router_arm(Path("/x/vllm-router"), urls, Ports(9000, 9001), "round_robin")
    assert vr.command[vr.command.index("--worker-urls") + 1 :][:2] == urls
    assert vr.command[vr.command.index("--policy") + 1] == "round_robin"


def test_loadgen_command_spreads_streams_and_marks_streams() -> None:
    load = Load("m", 100, True, 2.0, 20.0, 50, 50.0, 32, 60.0, 7)
    command = loadgen_command(load, ["http://a", "http://b"], Path("/tmp/out.json"))
    assert command.count("--url") == 2
    assert "--stream" in command
    assert command[command.index("--jitter") + 1] == "0.02"  # one decode step at 50 tokens/s
    plain = loadgen_command(Load("m", 1, False, 2.0, 20.0, 50, 50.0, 32, 60.0, 7), ["http://a"], Path("/o"))
    assert "--stream" not in plain


def test_vllm_router_install_uses_a_finished_venv_and_rebuilds_a_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> None:
        calls.append(command)
        if command[1:3] == ["-m", "venv"]:
            (Path(command[3]) / "bin").mkdir(parents=True)

    monkeypatch.setattr(vllm_router.subprocess, "run", fake_run)
    venv = vllm_router.venv_dir("0.1.17", tmp_path)
    (venv / "half-written").mkdir(parents=True)  # an interrupted install: no marker
    exe = vllm_router.install("0.1.17", tmp_path)
    assert exe == venv / "bin" / "vllm-router"
    assert [c[-1] for c in calls] == [str(venv), "vllm-router==0.1.17"]
    assert not (venv / "half-written").exists()
    calls.clear()
    assert vllm_router.install("0.1.17", tmp_path) == exe
    assert calls == []  # a finished venv is used as it is


# --- report ------------------------------------------------------------------------------------------


def _phase(arm: str, streams: int, mode: str, p50: float, p99: float, cpu_1k: float | None) -> dict[str, Any]:
    key = "ttfb" if mode == "streamed" else "latency"
    other = "latency" if key == "ttfb" else "ttfb"
    return {
        "arm": arm, "streams": streams, "mode": mode, "requests": 100, "errors": 0, "chunks": 5000,
        f"{key}_p50_ms": p50, f"{key}_p99_ms": p99, f"{other}_p50_ms": None, f"{other}_p99_ms": None,
        "proxy_cpu_s": None if cpu_1k is None else cpu_1k * 5, "proxy_cpu_per_1k_chunks_s": cpu_1k,
        "loadgen_machine_share": 0.2, "machine_busy_share": 0.6,
    }  # fmt: skip


def test_targets_from_added_latency_and_cpu_ratio() -> None:
    phases = with_added([
        _phase("direct", 100, "streamed", 20.0, 24.0, None),
        _phase("gateway", 100, "streamed", 21.0, 25.5, 0.25),  # +1.5 ms: PASS
        _phase("vllm-router", 100, "streamed", 20.2, 24.3, 0.1),  # gateway 2.5x: PASS
        _phase("direct", 1000, "streamed", 20.0, 30.0, None),
        _phase("gateway", 1000, "streamed", 25.0, 41.0, 0.5),  # +11 ms: FAIL
        _phase("vllm-router", 1000, "streamed", 20.5, 31.0, 0.1),  # 5x: FAIL
    ])  # fmt: skip
    assert [p["added_p99_ms"] for p in phases] == [None, 1.5, 0.3, None, 11.0, 1.0]
    verdicts = {t["target"]: (t["verdict"], t["value"]) for t in targets(phases)}
    assert verdicts == {
        "gateway added p99 TTFT at 100 streams <= 2 ms": ("PASS", 1.5),
        "gateway added p99 TTFT at 1000 streams <= 10 ms": ("FAIL", 11.0),
        "gateway CPU per chunk at 100 streams <= 3x vllm-router's": ("PASS", 2.5),
        "gateway CPU per chunk at 1000 streams <= 3x vllm-router's": ("FAIL", 5.0),
    }


def test_targets_are_not_applicable_without_the_gateway() -> None:
    phases = with_added([_phase("direct", 100, "non-streamed", 1000.0, 1010.0, None)])
    assert {t["verdict"] for t in targets(phases)} == {"n/a"}
    report = {
        "phases": phases,
        "arms": {"gateway": {"ran": False, "reason": "missing"}},
        "targets": targets(phases),
    }
    text = table(report)
    assert "arm gateway did not run: missing" in text
    assert "n/a   gateway added p99 latency at 100 streams <= 2 ms" in text


def test_py_spy_samples_count_for_the_top_frame_and_once_for_every_frame_on_the_stack() -> None:
    raw = "\n".join([
        "run (uvloop:1);handle (app.py:9);push (forward.py:182) 30",
        "run (uvloop:1);handle (app.py:9);push (forward.py:182) 10",
        "run (uvloop:1);handle (app.py:9) 5",
        "run (uvloop:1);recurse (r.py:2);recurse (r.py:2) 5",  # a frame twice on one stack counts once
        "",
        "not a sample line",
    ])  # fmt: skip
    own, inclusive, total = cli.summarize_samples(raw)
    assert total == 50
    assert own == {"push (forward.py:182)": 40, "handle (app.py:9)": 5, "recurse (r.py:2)": 5}
    assert inclusive["run (uvloop:1)"] == 50
    assert inclusive["handle (app.py:9)"] == 45
    assert inclusive["recurse (r.py:2)"] == 5
    text = cli.profile_summary_text(own, inclusive, total, Path("/w/g.txt"), top=2)
    assert "  80.0%    80.0%  push (forward.py:182)" in text
    assert "recurse" not in text  # beyond the top 2 (ties keep the order they were first seen)


# --- the load generator against a real sim engine, and the whole harness -------------------------------


def test_load_generator_streams_from_a_sim_engine(tmp_path: Path) -> None:
    async def scenario() -> list[Record]:
        engine = await SimEngine(
            EngineConfig("m", max_concurrent=8, tokens_per_second=100, host="127.0.0.1", port=0)
        ).start_async()
        args = loadgen.parse_args(["--url", engine.url, "--model", "m", "--streams", "3", "--stream",
                                   "--warmup", "0", "--duration", "0.3", "--stagger", "0.05", "--jitter",
                                   "0.01", "--max-tokens", "5", "--out", str(tmp_path / "o")])  # fmt: skip
        generator = loadgen.LoadGenerator(args)
        await generator.run()
        await engine.stop_async(0)
        return generator.records

    records = asyncio.run(scenario())
    assert {r.stream for r in records} == {0, 1, 2}
    assert all(r.complete and r.status == 200 and r.chunks == 5 for r in records)
    # 5 tokens at 100/s on the engine's decode clock: the first within a step, the last 4 steps later
    assert all(r.first_byte is not None and r.start < r.first_byte < r.end for r in records)
    assert all(0.04 <= r.end - r.start < 1.0 for r in records)


def test_a_tiny_run_of_the_direct_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--arms", "direct", "--levels", "4", "--engines", "1", "--warmup", "0.2",
                     "--duration", "1", "--max-tokens", "5", "--workdir", str(tmp_path),
                     "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(p["arm"], p["mode"]) for p in report["phases"]] == [
        ("direct", "non-streamed"),
        ("direct", "streamed"),
    ]
    streamed = report["phases"][1]
    assert streamed["requests"] > 4
    assert streamed["errors"] == 0
    assert streamed["chunks"] % 5 == 0  # whole streams of 5 tokens each
    assert streamed["ttfb_p50_ms"] < streamed["latency_p50_ms"]
    assert (tmp_path / "report.txt").read_text().startswith("streams")


def test_nginx_config_relays_unbuffered_to_every_engine_over_kept_alive_connections(tmp_path: Path) -> None:
    from bench.gateway.nginx import build_nginx_config, nginx_arm

    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2/"]
    config = build_nginx_config(urls, 8080, tmp_path)
    assert "server 127.0.0.1:1;" in config
    assert "server 127.0.0.1:2;" in config
    assert "listen 127.0.0.1:8080" in config
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in config
    arm = nginx_arm(Path("/usr/sbin/nginx"), urls, Ports(8080, 8081), tmp_path)
    written = Path(arm.command[arm.command.index("-c") + 1])
    assert written.read_text() == build_nginx_config(urls, 8080, tmp_path / "nginx")
    assert arm.ready_url == "http://127.0.0.1:8080/nginx-health"


def test_front_overhead_measures_both_servers_answering(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.gateway import front_overhead

    assert front_overhead.main(["--seconds", "0.3", "--connections", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["server"] for row in rows] == ["aiohttp", "httptools"]
    assert all(row["requests"] > 0 and row["cpu_us_per_request"] is not None for row in rows)
