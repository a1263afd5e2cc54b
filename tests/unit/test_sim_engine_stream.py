"""The simulated engine's streaming, cancellation, kill and shared loop, over real HTTP on 127.0.0.0/8."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import openai
import pytest

from inferfleet.localcluster.waiting import wait_for
from inferfleet.sim.engine import EngineConfig, SimEngine

MODEL = "tiny"


class Stream:
    """A streamed request read event by event, each with the time it arrived."""

    def __init__(self, engine: SimEngine, path: str, body: dict[str, Any]) -> None:
        host, port = engine.url.removeprefix("http://").rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.sent = time.monotonic()
        self.connection.request(
            "POST", path, json.dumps({**body, "stream": True}), {"Content-Type": "application/json"}
        )
        self.response = self.connection.getresponse()

    def events(self) -> Iterator[tuple[float, str]]:
        """(seconds since the request was sent, the event's data) until the body ends."""
        while line := self.response.readline():
            if line.startswith(b"data: "):
                yield time.monotonic() - self.sent, line.removeprefix(b"data: ").decode().rstrip("\n")

    def close(self) -> None:
        self.connection.close()


def chunks(events: list[tuple[float, str]]) -> list[dict[str, Any]]:
    assert events[-1][1] == "[DONE]"
    return [json.loads(data) for _, data in events[:-1]]


def test_a_chat_stream_sends_each_token_as_it_is_generated(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(tokens_per_second=20)
    generation = 20 / 20  # seconds for 20 tokens
    body = {"messages": [{"role": "user", "content": "a b"}], "max_tokens": 20}
    stream = Stream(engine, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    assert stream.response.getheader("Content-Type") == "text/event-stream"
    events = list(stream.events())

    first_at, last_at = events[0][0], events[-1][0]
    assert first_at < generation / 4  # the first token, not the whole generation
    assert last_at - first_at > generation / 2  # tokens arrive spread over the generation, unbuffered
    *content, usage = chunks(events)
    assert len(content) == 20
    assert {c["object"] for c in content} == {"chat.completion.chunk"}
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 19 + ["length"]
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert text == " ".join(f"tok{i}" for i in range(20))
    assert (usage["choices"], usage["usage"]) == (
        [],
        {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22},
    )
    assert engine.counts().succeeded == 1


def test_a_completions_stream_sends_text_completion_chunks(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(tokens_per_second=1000)
    content = chunks(list(Stream(engine, "/v1/completions", {"prompt": "x", "max_tokens": 3}).events()))
    assert [c["object"] for c in content] == ["text_completion"] * 3  # no usage chunk unless asked
    assert [c["choices"][0]["text"] for c in content] == ["tok0", " tok1", " tok2"]
    assert content[-1]["choices"][0]["finish_reason"] == "length"


def test_the_official_openai_client_streams_and_not(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(tokens_per_second=1000)
    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "hello"}]

    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3"
    streamed = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    parts = list(streamed)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == "tok0 tok1 tok2 tok3"
    assert parts[-1].usage is not None
    assert parts[-1].usage.completion_tokens == 4
    text = client.completions.create(model=MODEL, prompt="x", max_tokens=3, stream=True)
    assert "".join(p.choices[0].text for p in text) == "tok0 tok1 tok2"
    assert client.models.list().data[0].id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")


def test_a_client_that_leaves_mid_stream_frees_its_slot_at_once(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=20)  # 50 s for 1000 tokens
    stream = Stream(engine, "/v1/completions", {"prompt": "x", "max_tokens": 1000})
    next(stream.events())
    assert engine.counts().running == 1
    stream.close()
    wait_for(lambda: engine.counts().running == 0, timeout=5, what="the slot freed", interval=0.01)
    assert (engine.counts().cancelled, engine.counts().succeeded) == (1, 0)


def test_a_client_that_leaves_the_queue_frees_its_place(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=20)
    running = Stream(engine, "/v1/completions", {"prompt": "x", "max_tokens": 1000})
    next(running.events())
    queued = http.client.HTTPConnection(*engine.url.removeprefix("http://").rsplit(":", 1), timeout=30)
    queued.request("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 5}))
    wait_for(lambda: engine.counts().waiting == 1, timeout=5, what="a queued request", interval=0.01)
    queued.close()
    wait_for(lambda: engine.counts().waiting == 0, timeout=5, what="the queue emptied", interval=0.01)
    assert (engine.counts().running, engine.counts().cancelled) == (1, 1)  # the stream runs on
    running.close()


def test_kill_resets_a_stream_mid_response_and_refuses_new_connections(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(tokens_per_second=20)
    stream = Stream(engine, "/v1/chat/completions", {"messages": [], "max_tokens": 1000})
    events = stream.events()
    next(events)
    engine.kill()
    with pytest.raises(ConnectionResetError):  # a reset, as from a dead peer, not a clean end
        list(events)
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(*engine.url.removeprefix("http://").rsplit(":", 1), timeout=5).connect()
    wait_for(lambda: engine.counts().running == 0, timeout=5, what="the killed request gone", interval=0.01)


def test_stop_lets_a_stream_finish_within_the_drain(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(tokens_per_second=20)
    stream = Stream(engine, "/v1/completions", {"prompt": "x", "max_tokens": 20})
    events = stream.events()
    first = next(events)
    drained: list[bool] = []
    stopper = threading.Thread(target=lambda: drained.append(engine.stop(drain_seconds=20)))
    stopper.start()
    content = chunks([first, *events])
    stopper.join(timeout=10)
    assert len(content) == 20
    assert drained == [True]


def test_stop_ends_a_stream_still_running_after_the_drain_with_an_error_event(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(tokens_per_second=20)
    stream = Stream(engine, "/v1/completions", {"prompt": "x", "max_tokens": 1000})
    events = stream.events()
    next(events)
    assert engine.stop(drain_seconds=0.2) is False
    rest = [data for _, data in events]
    assert "[DONE]" not in rest
    assert json.loads(rest[-1])["error"]["code"] == 503


def test_one_loop_thread_hosts_fifty_engines_on_their_own_loopback_addresses(
    start_engine: Callable[..., SimEngine],
) -> None:
    threads_before = threading.active_count()
    engines = [start_engine(host=f"127.0.7.{i + 1}", tokens_per_second=100) for i in range(50)]
    assert threading.active_count() <= threads_before + 1  # the shared loop, if no test started it yet

    async def stream_from_all() -> list[str]:
        async with aiohttp.ClientSession() as session:

            async def one(engine: SimEngine) -> str:
                body = {"prompt": "x", "max_tokens": 10, "stream": True}
                async with session.post(f"{engine.url}/v1/completions", json=body) as response:
                    return (await response.read()).decode().rsplit("data: ", 1)[1].strip()

            return await asyncio.gather(*(one(engine) for engine in engines))

    assert asyncio.run(stream_from_all()) == ["[DONE]"] * 50
    assert [e.url.split(":")[1] for e in engines] == [f"//127.0.7.{i + 1}" for i in range(50)]
    assert threading.active_count() <= threads_before + 1
    assert sum(e.counts().succeeded for e in engines) == 50


def test_an_engine_runs_on_the_callers_loop_with_the_async_api() -> None:
    async def scenario() -> tuple[int, str]:
        config = EngineConfig(model=MODEL, host="127.0.0.1", port=0, tokens_per_second=1000)
        engine = await SimEngine(config).start_async()
        with pytest.raises(RuntimeError):
            engine.stop()  # blocking on its own loop would deadlock
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "x", "max_tokens": 2, "stream": True}
            async with session.post(f"{engine.url}/v1/completions", json=body) as response:
                status, text = response.status, await response.text()
        assert await engine.stop_async(drain_seconds=5) is True
        return status, text

    status, text = asyncio.run(scenario())
    assert status == 200
    assert text.endswith("data: [DONE]\n\n")


def test_a_non_streamed_request_answers_the_whole_completion_after_its_generation_time(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(tokens_per_second=50)
    generation = 25 / 50
    host, port = engine.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    started = time.monotonic()
    connection.request("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 25}))
    reply = json.loads(connection.getresponse().read())
    elapsed = time.monotonic() - started
    assert reply["choices"][0]["text"] == " ".join(f"tok{i}" for i in range(25))
    assert generation - 1 / 50 <= elapsed < 5 * generation  # the first step comes at most one step early
