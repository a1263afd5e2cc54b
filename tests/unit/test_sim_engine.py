"""The simulated engine (`inferfleet sim-engine`) and load generator (`inferfleet sim-load`), on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from inferfleet.api import EngineKind
from inferfleet.cli import main
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.drain import BUSY_METRICS, DRAIN_SCRIPT
from inferfleet.sim.engine import EngineConfig, SimEngine, first_tick
from inferfleet.sim.load import LoadSummary, completions_url, run_load

MODEL = "tiny"


def post(url: str, body: dict[str, Any], timeout: float = 30) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def queue_metrics(base_url: str) -> dict[str, float]:
    """The engine's samples by metric name (the one model's label set each)."""
    _, text = get(f"{base_url}/metrics")
    samples = [line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {name.split("{")[0]: float(value) for name, value in samples}


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    return thread, results


def test_health_models_and_both_completion_apis(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(tokens_per_second=1000)
    assert get(f"{engine.url}/health")[0] == 200
    models = json.loads(get(f"{engine.url}/v1/models")[1])
    assert [m["id"] for m in models["data"]] == [MODEL]

    status, reply = post(f"{engine.url}/v1/completions", {"model": MODEL, "prompt": "a b c", "max_tokens": 5})
    assert status == 200
    assert reply["object"] == "text_completion"
    assert reply["model"] == MODEL
    assert len(reply["choices"][0]["text"].split()) == 5
    assert reply["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}

    chat = {"messages": [{"role": "user", "content": "hello there"}], "max_completion_tokens": 3}
    status, reply = post(f"{engine.url}/v1/chat/completions", chat)
    assert status == 200
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 3

    status, reply = post(f"{engine.url}/v1/completions", {"prompt": "x"})
    assert (status, reply["usage"]["completion_tokens"]) == (200, 16)  # vLLM's default max_tokens
    assert queue_metrics(engine.url)["vllm:request_success_total"] == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "other", "prompt": "x"}, 404),
        ({"prompt": "x", "max_tokens": 0}, 400),
        ({"prompt": "x", "max_tokens": "5"}, 400),
        ({"prompt": "x", "max_tokens": True}, 400),
        ({"prompt": "x", "stream": "yes"}, 400),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, 400),  # only with stream, as OpenAI
    ],
)
def test_requests_the_engine_cannot_serve_get_openai_style_errors(
    start_engine: Callable[..., SimEngine], body: dict[str, Any], status: int
) -> None:
    engine = start_engine()
    got, reply = post(f"{engine.url}/v1/completions", body)
    assert (got, reply["object"], reply["code"]) == (status, "error", status)


def test_requests_beyond_max_concurrent_wait_in_the_queue_and_all_complete(
    start_engine: Callable[..., SimEngine],
) -> None:
    # Each request runs 0.5 s; 6 at once on 2 slots: 4 wait, then the queue empties.
    engine = start_engine(max_concurrent=2, tokens_per_second=40)
    senders = [
        in_background(lambda: post(f"{engine.url}/v1/completions", {"prompt": "p", "max_tokens": 20}))
        for _ in range(6)
    ]
    seen: list[dict[str, float]] = []

    def sample() -> dict[str, float]:
        seen.append(queue_metrics(engine.url))
        return seen[-1]

    wait_for(lambda: sample()["vllm:num_requests_waiting"] > 0, timeout=10, what="a queue", interval=0.05)
    wait_for(
        lambda: sample()["vllm:request_success_total"] == 6, timeout=30, what="all 6 served", interval=0.05
    )
    for thread, _ in senders:
        thread.join(timeout=10)
    replies = [results[0] for _, results in senders]
    assert all(status == 200 and reply["usage"]["completion_tokens"] == 20 for status, reply in replies)
    assert max(s["vllm:num_requests_running"] for s in seen) == 2
    assert max(s["vllm:num_requests_waiting"] for s in seen) <= 4
    assert (seen[-1]["vllm:num_requests_running"], seen[-1]["vllm:num_requests_waiting"]) == (0, 0)


def test_stop_lets_held_requests_finish_within_the_drain(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=10)  # 0.6 s a request
    senders = [
        in_background(lambda: post(f"{engine.url}/v1/completions", {"prompt": "p", "max_tokens": 6}))
        for _ in range(2)
    ]
    wait_for(lambda: engine.counts().waiting == 1, timeout=10, what="one running, one waiting", interval=0.01)

    started = time.monotonic()
    assert engine.stop(drain_seconds=20) is True
    assert time.monotonic() - started < 10
    for thread, _ in senders:
        thread.join(timeout=5)
    assert [results[0][0] for _, results in senders] == [200, 200]
    with pytest.raises(urllib.error.URLError):
        get(f"{engine.url}/health")  # no new connections once stopped


def test_stop_cuts_requests_still_running_after_the_drain(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=1)
    senders = [
        in_background(lambda: post(f"{engine.url}/v1/completions", {"prompt": "p", "max_tokens": 600}))
        for _ in range(2)
    ]
    wait_for(lambda: engine.counts().waiting == 1, timeout=10, what="one running, one waiting")

    started = time.monotonic()
    assert engine.stop(drain_seconds=0.5) is False
    assert time.monotonic() - started < 5
    for thread, _ in senders:
        thread.join(timeout=5)
    assert [results[0][0] for _, results in senders] == [503, 503]


def test_the_operators_drain_hook_waits_until_the_engine_is_idle(
    start_engine: Callable[..., SimEngine],
) -> None:
    """The preStop script the operator gives vLLM pods reads this engine's metrics correctly."""
    engine = start_engine(max_concurrent=1, tokens_per_second=10)
    sender, results = in_background(
        lambda: post(f"{engine.url}/v1/completions", {"prompt": "p", "max_tokens": 15})
    )
    wait_for(lambda: engine.counts().running == 1, timeout=10, what="a running request")
    port = engine.url.rsplit(":", 1)[1]
    names = BUSY_METRICS[EngineKind.VLLM]
    hook = subprocess.run([sys.executable, "-c", DRAIN_SCRIPT, port, "30", *names], timeout=40, check=True)
    assert hook.returncode == 0
    assert engine.counts().succeeded == 1  # the hook returned only once the request was done
    sender.join(timeout=5)
    assert results[0][0] == 200


def test_sim_load_sends_poisson_arrivals_and_reports_all_ok(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(max_concurrent=4, tokens_per_second=400)
    summary = run_load(f"{engine.url}/v1", rps=20, duration=1.0, max_tokens=4, seed=3)
    assert summary.sent >= 5
    assert (summary.ok, summary.errors, summary.skipped) == (summary.sent, 0, 0)
    assert summary.passed
    p50, p95 = summary.percentile(0.5), summary.percentile(0.95)
    assert p50 is not None
    assert p95 is not None
    assert 0 < p50 <= p95
    assert queue_metrics(engine.url)["vllm:request_success_total"] == summary.sent


def test_sim_load_skips_arrivals_beyond_max_in_flight(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=10)  # 0.5 s a request
    summary = run_load(engine.url, rps=20, duration=1.0, max_tokens=5, max_in_flight=1, seed=3)
    assert summary.skipped > 0
    assert 1 <= summary.sent <= 3
    assert (summary.ok, summary.errors) == (summary.sent, 0)


def test_sim_load_command_fails_when_requests_fail(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # nothing listens on port 9 of 127.0.0.1
        main(
            ["sim-load", "--url", "http://127.0.0.1:9", "--rps", "20", "--duration", "0.5", "--timeout", "2"]
        )
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "ok=0" in out
    assert "error: URLError" in out


def test_sim_load_command_prints_the_summary(
    start_engine: Callable[..., SimEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = start_engine(tokens_per_second=1000)
    with pytest.raises(SystemExit) as exit_info:
        main(["sim-load", "--url", engine.url, "--rps", "20", "--duration", "0.5", "--seed", "1"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "errors=0 skipped=0" in out


def test_summary_percentiles_use_nearest_rank() -> None:
    summary = LoadSummary(sent=4, ok=4, latencies=[0.4, 0.1, 0.3, 0.2])
    assert (summary.percentile(0.5), summary.percentile(0.95)) == (0.2, 0.4)
    assert LoadSummary().percentile(0.5) is None
    assert "p50=n/a" in LoadSummary().render()


def test_completions_url_accepts_the_server_or_its_v1_endpoint() -> None:
    assert completions_url("http://svc.ns.svc:8000") == "http://svc.ns.svc:8000/v1/completions"
    assert completions_url("http://svc.ns.svc:8000/v1/") == "http://svc.ns.svc:8000/v1/completions"


def test_the_command_stops_cleanly_on_sigterm_cutting_requests_at_the_drain_bound() -> None:
    command = [
        sys.executable, "-m", "inferfleet", "sim-engine", "--model", MODEL, "--host", "127.0.0.1",
        "--port", "0", "--tokens-per-second", "1", "--drain-seconds", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in process.stdout or []:
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        first = lines.get(timeout=30)
        url = first.split(" listening on ", 1)[1].split()[0]
        assert get(f"{url}/health")[0] == 200
        sender, results = in_background(lambda: post(f"{url}/v1/completions", {"max_tokens": 600}))
        wait_for(lambda: queue_metrics(url)["vllm:num_requests_running"] == 1, timeout=10, what="running")

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        sender.join(timeout=5)
        assert results[0][0] == 503  # cut after the 1 s drain, answered before the exit
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("argument", "said"),
    [
        (["--kv-cache-tokens", "0"], "--kv-cache-tokens >= 1"),
        (["--step-phase", "1"], "0 <= --step-phase < 1"),
    ],
)
def test_the_command_refuses_a_kv_cache_of_no_tokens_and_a_phase_outside_a_step(
    argument: list[str], said: str
) -> None:
    command = [sys.executable, "-m", "inferfleet", "sim-engine", "--model", MODEL, *argument]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert said in result.stderr


@pytest.mark.parametrize(
    ("monotonic", "phase", "expected_wait"),
    [
        pytest.param(10.0, None, 0.1, id="no-phase-a-step-from-now"),
        pytest.param(10.0, 0.25, 0.025, id="next-tick-of-the-phase"),
        pytest.param(10.03, 0.25, 0.095, id="past-this-steps-tick-the-next-steps"),
        pytest.param(10.0, 0.0, 0.1, id="on-a-tick-the-next-one"),
        pytest.param(10.099, 0.0, 0.001, id="just-before-a-tick"),
        pytest.param(0.3, 0.0, 0.1, id="on-a-tick-the-division-rounds-below"),  # 0.3 / 0.1 = 2.999...
    ],
)
def test_an_idle_clock_starts_at_its_phase_on_the_machines_clock(
    monotonic: float, phase: float | None, expected_wait: float
) -> None:
    # 10 tokens/s: a step of 0.1 s; the loop's clock reads 500 at that moment
    assert first_tick(500.0, monotonic, 0.1, phase) == pytest.approx(500.0 + expected_wait, abs=1e-9)


@pytest.mark.parametrize("phase", [-0.1, 1.0])
def test_a_step_phase_outside_a_step_is_refused(phase: float) -> None:
    with pytest.raises(ValueError, match="step_phase"):
        SimEngine(EngineConfig(model="m", step_phase=phase))
