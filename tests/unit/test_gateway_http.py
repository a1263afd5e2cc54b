"""The gateway over real HTTP on 127.0.0.1: simulated engines behind it, the official clients in front.

Services are added to the gateway's registry directly (no cluster here); discovery from
EndpointSlices, scale from zero and drains are proven on the local cluster (tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest

from inferfleet.gateway.app import Gateway, GatewayConfig
from inferfleet.planning.prefix_routing import prompt_words
from inferfleet.planning.routing import ServiceRoute
from inferfleet.sim.engine import EngineConfig, SimEngine

MODEL = "tiny"
pytestmark = pytest.mark.unit


def _address(engine: SimEngine) -> str:
    return engine.url.removeprefix("http://")


@asynccontextmanager
async def gateway(route: ServiceRoute, *engines: SimEngine, **config: Any) -> AsyncIterator[str]:
    async with gateway_process(route, *engines, **config) as (url, _):
        yield url


@asynccontextmanager
async def gateway_process(
    route: ServiceRoute, *engines: SimEngine, **config: Any
) -> AsyncIterator[tuple[str, Gateway]]:
    settings = {"host": "127.0.0.1", "port": 0, "metrics_address": "127.0.0.1", "metrics_port": 0, **config}
    gw = Gateway(GatewayConfig(**settings), kubernetes=False)
    await gw.start()
    gw.registry.add_static(route, tuple(_address(e) for e in engines))
    try:
        yield f"http://127.0.0.1:{gw.ports[0]}", gw
    finally:
        await gw.stop()


def route(**overrides: Any) -> ServiceRoute:
    return ServiceRoute(**{"namespace": "ns", "name": "svc", "model": MODEL, **overrides})


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_openai_client_non_streamed_and_streamed_chunk_by_chunk(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(tokens_per_second=50)

    async def scenario() -> None:
        async with gateway(route(), engine) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            reply = await client.completions.create(model=MODEL, prompt="hello", max_tokens=5)
            assert reply.choices[0].text == "tok0 tok1 tok2 tok3 tok4"
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=40, stream=True
            )
            while_generating, text = 0, ""
            async for chunk in stream:
                while_generating += engine.counts().running
                text += chunk.choices[0].delta.content or "" if chunk.choices else ""
            assert text.split() == [f"tok{i}" for i in range(40)]
            # Passed through as generated: chunks reached the client while the engine was still
            # generating (40 tokens at 50/s: 0.8 s). Not a wall-clock gap, which a pause of this
            # whole process (a full garbage collection takes ~0.3 s late in the suite) can
            # squeeze: the engine runs in it too.
            assert while_generating >= 2
            await client.close()

    asyncio.run(scenario())


def test_unknown_model_is_openais_not_found(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine()

    async def scenario() -> None:
        async with gateway(route(), engine) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.NotFoundError, match="does not exist"):
                await client.completions.create(model="gpt-nope", prompt="hello")
            await client.close()

    asyncio.run(scenario())


def test_full_queue_is_429_with_retry_after_and_a_long_wait_503(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=20)  # a request of 20 tokens holds the slot 1 s

    async def scenario() -> None:
        async with (
            gateway(route(slots_per_replica=1, max_queued=1, queue_timeout=0.3), engine) as url,
            aiohttp.ClientSession() as session,
        ):
            body = {"model": MODEL, "prompt": "x", "max_tokens": 20}
            running = asyncio.ensure_future(session.post(f"{url}/v1/completions", json=body))
            await wait_until(lambda: engine.counts().running == 1)
            queued = asyncio.ensure_future(session.post(f"{url}/v1/completions", json=body))
            await asyncio.sleep(0.05)  # let it reach the queue: the next one must find it full
            async with session.post(f"{url}/v1/completions", json=body) as full:
                assert full.status == 429
                assert full.headers["Retry-After"] == "1"
                assert (await full.json())["error"]["code"] == "queue_full"
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.RateLimitError, match="requests waiting"):  # the client's own type
                await client.completions.create(model=MODEL, prompt="x", max_tokens=20)
            await client.close()
            late = await queued
            assert late.status == 503
            assert int(late.headers["Retry-After"]) > 0
            assert (await late.json())["error"]["code"] == "queue_timeout"
            assert (await running).status == 200
            assert engine.counts().succeeded == 1  # the refused ones never reached the engine

    asyncio.run(scenario())


def test_client_disconnects_free_the_slot_and_leave_the_queue(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(max_concurrent=1, tokens_per_second=10)

    async def scenario() -> None:
        async with gateway(route(slots_per_replica=1), engine) as url, aiohttp.ClientSession() as session:
            stream_body = {"model": MODEL, "prompt": "x", "max_tokens": 100, "stream": True}
            streaming = await session.post(f"{url}/v1/completions", json=stream_body)
            await streaming.content.readline()  # the first chunk arrived: it is running on the engine
            queued = asyncio.ensure_future(
                session.post(f"{url}/v1/completions", json={**stream_body, "stream": False})
            )
            await asyncio.sleep(0.05)
            queued.cancel()  # the client gives up while queued
            streaming.close()  # and the streaming client hangs up mid-stream
            await wait_until(lambda: engine.counts().running == 0 and engine.counts().waiting == 0)
            assert engine.counts().succeeded == 0
            # the freed slot is usable at once: a new request runs without queueing behind a ghost
            async with session.post(f"{url}/v1/completions", json={"model": MODEL, "max_tokens": 2}) as ok:
                assert ok.status == 200

    asyncio.run(scenario())


def test_answers_read_to_the_end_leave_their_engine_connection_open_for_the_next(
    start_engine: Callable[..., SimEngine],
) -> None:
    engine = start_engine(tokens_per_second=200)

    async def scenario() -> None:
        async with gateway(route(), engine) as url, aiohttp.ClientSession() as session:
            for stream in (False, True, False, True):
                body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": stream}
                async with session.post(f"{url}/v1/completions", json=body) as reply:
                    assert reply.status == 200
                    await reply.read()
            assert engine.counts().connections == 1  # one kept-alive connection served all four
            streaming = await session.post(
                f"{url}/v1/completions", json={"model": MODEL, "max_tokens": 1000, "stream": True}
            )
            await streaming.content.readline()
            streaming.close()  # a stream the client left is cut: the engine stops generating
            await wait_until(lambda: engine.counts().running == 0)
            assert engine.counts().cancelled == 1

    asyncio.run(scenario())


def test_killed_replica_non_streamed_requests_retried_streams_end_with_an_error(
    start_engine: Callable[..., SimEngine],
) -> None:
    doomed, healthy = start_engine(tokens_per_second=20), start_engine(tokens_per_second=20)

    async def scenario() -> None:
        async with gateway_process(route(), doomed) as (url, gw), aiohttp.ClientSession() as session:
            body = {"model": MODEL, "prompt": "x", "max_tokens": 20}
            stream = await session.post(
                f"{url}/v1/completions", json={**body, "stream": True, "max_tokens": 60}
            )
            assert (await stream.content.readline()).startswith(b"data: ")  # bytes reached the client
            gw.registry.pools[("ns", "svc")].set_endpoints((_address(doomed), _address(healthy)))
            calls = [
                asyncio.ensure_future(session.post(f"{url}/v1/completions", json=body)) for _ in range(6)
            ]
            await wait_until(lambda: doomed.counts().running >= 3)  # the stream and some of the six
            doomed.kill()
            answers = [await c for c in calls]
            assert [a.status for a in answers] == [200] * 6
            assert len({(await a.json())["id"] for a in answers}) == 6  # each answered, once
            assert healthy.counts().succeeded == 6
            tail = (await stream.content.read()).decode()
            events = [json.loads(line[6:]) for line in tail.splitlines() if line.startswith("data: {")]
            assert "[DONE]" not in tail
            assert events[-1]["error"]["code"] == "upstream_failed"  # a clean error, not a silent cut

    asyncio.run(scenario())


def test_curl_streamed_and_not(start_engine: Callable[..., SimEngine]) -> None:
    engine = start_engine(tokens_per_second=200)

    async def curl(url: str, body: dict[str, Any]) -> str:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-N", "--fail-with-body", "-H", "Content-Type: application/json",
            "-d", json.dumps(body), url, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        assert process.returncode == 0, out
        return out.decode()

    async def scenario() -> None:
        async with gateway(route(), engine) as url:
            base = f"{url}/namespaces/ns/services/svc/v1/chat/completions"
            messages = [{"role": "user", "content": "hi"}]
            whole = json.loads(await curl(base, {"messages": messages, "max_tokens": 3}))
            assert whole["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
            streamed = await curl(base, {"messages": messages, "max_tokens": 3, "stream": True})
            lines = [line for line in streamed.splitlines() if line]
            assert lines[-1] == "data: [DONE]"
            deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[:-1]]
            assert "".join(d or "" for d in deltas).split() == ["tok0", "tok1", "tok2"]

    asyncio.run(scenario())


def test_prefix_affinity_keeps_a_conversation_on_one_replica_and_spreads_others(
    start_engine: Callable[..., SimEngine],
) -> None:
    replicas = [start_engine(tokens_per_second=500) for _ in range(3)]
    system = " ".join(f"rule{i}" for i in range(40))

    async def scenario() -> tuple[list[int], list[int]]:
        async with (
            gateway(route(), *replicas, routing="prefix-affinity") as url,
            aiohttp.ClientSession() as session,
        ):

            async def ask(system_prompt: str, turn: int) -> None:
                messages = [
                    {"role": "system", "content": system_prompt},
                    {"role": "user", "content": f"turn {turn}"},
                ]
                body = {"model": MODEL, "messages": messages, "max_tokens": 2}
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    assert response.status == 200

            for turn in range(12):
                await ask(system, turn)
            one = [e.counts().succeeded for e in replicas]
            for conversation in range(30):
                await ask(f"conversation {conversation} " + system, 0)
            spread = [e.counts().succeeded - n for e, n in zip(replicas, one, strict=True)]
            return one, spread

    one, spread = asyncio.run(scenario())
    assert sorted(one) == [0, 0, 12]  # every turn of the conversation on one replica (its cache)
    assert sum(spread) == 30
    assert all(n > 0 for n in spread)  # other conversations use every replica


def test_prefix_affinity_looks_past_a_system_prompt_every_conversation_shares(
    start_engine: Callable[..., SimEngine],
) -> None:
    """Conversations behind one long system prompt, each longer than it, spread over the replicas,
    and each second turn finds its first turn in the cache of the replica that served it. (A shared
    run that is most of the prompt stays with its holders: tests/unit/test_prefix_routing.py.)"""
    replicas = [start_engine(tokens_per_second=500) for _ in range(3)]
    system = {"role": "system", "content": " ".join(f"rule{i}" for i in range(200))}

    def first_turn(c: int) -> list[dict[str, str]]:
        return [system, {"role": "user", "content": " ".join(f"c{c}q{i}" for i in range(240))}]

    async def scenario() -> tuple[list[int], int, int]:
        async with (
            gateway(route(), *replicas, routing="prefix-affinity") as url,
            aiohttp.ClientSession() as session,
        ):

            async def ask(messages: list[dict[str, str]]) -> None:
                body = {"model": MODEL, "messages": messages, "max_tokens": 2}
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    assert response.status == 200

            for c in range(24):
                await ask(first_turn(c))
            served = [e.counts().succeeded for e in replicas]
            hits = sum(e.counts().prefix_hit_tokens for e in replicas)
            for c in range(24):
                await ask([*first_turn(c), {"role": "assistant", "content": "tok0 tok1"},
                           {"role": "user", "content": "and then?"}])  # fmt: skip
            return served, hits, sum(e.counts().prefix_hit_tokens for e in replicas) - hits

    served, _, second_turn_hits = asyncio.run(scenario())
    assert all(n > 0 for n in served)  # the shared system prompt did not pin them to one replica
    block = EngineConfig(model=MODEL).block_tokens
    whole_first_turns = sum(len(prompt_words({"messages": first_turn(c)}, True)) // block for c in range(24))
    assert second_turn_hits == whole_first_turns * block  # every first turn found where it was cached


def test_two_gateway_replicas_send_a_conversations_turns_to_the_same_replica(
    start_engine: Callable[..., SimEngine],
) -> None:
    """The chart runs two gateway replicas, each with its own index. A conversation's first turn
    through one and its next turn through the other still meet on one engine replica: a new
    conversation's key, its first block past the shared system prompt, is the same in both."""
    replicas = [start_engine(tokens_per_second=500) for _ in range(3)]
    system = {"role": "system", "content": " ".join(f"rule{i}" for i in range(100))}

    def first_turn(c: int) -> list[dict[str, str]]:
        return [system, {"role": "user", "content": " ".join(f"c{c}q{i}" for i in range(120))}]

    def next_turn(c: int) -> list[dict[str, str]]:
        return [
            *first_turn(c),
            {"role": "assistant", "content": "tok0 tok1"},
            {"role": "user", "content": "more"},
        ]

    async def scenario() -> tuple[int, int]:
        async with (
            gateway(route(), *replicas, routing="prefix-affinity") as one,
            gateway(route(), *replicas, routing="prefix-affinity") as other,
            aiohttp.ClientSession() as session,
        ):

            async def ask(url: str, messages: list[dict[str, str]]) -> None:
                body = {"model": MODEL, "messages": messages, "max_tokens": 2}
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    assert response.status == 200

            # Both gateways have seen conversations part after the system prompt: until a gateway
            # has, it cannot tell the shared part from a conversation, and keys on block 0.
            for c in range(4):
                await ask(one if c % 2 else other, first_turn(100 + c))
            for c in range(12):
                await ask(one, first_turn(c))
            hits = sum(e.counts().prefix_hit_tokens for e in replicas)
            for c in range(12):
                await ask(other, next_turn(c))
            return sum(e.counts().prefix_hit_tokens for e in replicas) - hits, sum(
                e.counts().succeeded > 0 for e in replicas
            )

    next_turn_hits, replicas_used = asyncio.run(scenario())
    block = EngineConfig(model=MODEL).block_tokens
    whole_first_turns = sum(len(prompt_words({"messages": first_turn(c)}, True)) // block for c in range(12))
    assert next_turn_hits == whole_first_turns * block  # each next turn found its first turn's cache
    assert replicas_used == 3  # and the conversations spread over the engine replicas


@pytest.mark.parametrize(("slack", "rereads"), [(0, True), (4, False)])
def test_questions_asked_at_once_on_a_held_document_stay_with_it_within_the_slack(
    start_engine: Callable[..., SimEngine], slack: int, rereads: bool
) -> None:
    """Four questions on one document, each sent while the ones before it stream. With few requests
    in flight, 2x the mean load is one request, so without a slack the second question spills to a
    replica that reads the document again; a slack of 4 keeps all four where it is cached."""
    replicas = [start_engine(tokens_per_second=100) for _ in range(4)]
    document = " ".join(f"d{i}" for i in range(320))

    def asked(q: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": document + " " + " ".join(f"q{q}w{i}" for i in range(40))}]

    async def scenario() -> tuple[int, list[int]]:
        async with (
            gateway(
                route(), *replicas, routing="prefix-affinity", prefix_load_bound=1.0, prefix_load_slack=slack
            ) as url,  # fmt: skip
            aiohttp.ClientSession() as session,
            contextlib.AsyncExitStack() as streams,
        ):
            body = {"model": MODEL, "messages": [{"role": "user", "content": document}], "max_tokens": 2}
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                await response.read()
            hits = sum(e.counts().prefix_hit_tokens for e in replicas)
            responses = []
            for q in range(4):  # the gateway answers a stream's headers with the engine's first chunk
                body = {"model": MODEL, "messages": asked(q), "max_tokens": 1000, "stream": True}
                responses.append(await streams.enter_async_context(
                    session.post(f"{url}/v1/chat/completions", json=body)))  # fmt: skip
            running = [e.counts().running for e in replicas]
            assert sum(running) == 4  # all four in flight at once
            for response in responses:
                assert response.status == 200
                response.close()  # where each went is decided: no need to stream 10 s of tokens
            return sum(e.counts().prefix_hit_tokens for e in replicas) - hits, running

    question_hits, running = asyncio.run(scenario())
    block = EngineConfig(model=MODEL).block_tokens
    held = len(prompt_words({"messages": [{"role": "user", "content": document}]}, True)) // block * block
    assert (question_hits < 4 * held) == rereads
    if not rereads:
        assert sorted(running) == [0, 0, 0, 4]  # the four questions on one replica


def test_a_ready_replica_not_yet_listening_is_tried_again_after_a_moment() -> None:
    """Kubernetes may mark a pod Ready a moment before its server listens (a probe that passed
    early, a restarted listener): the gateway's retries on the only endpoint back off instead of
    spending every attempt within a millisecond."""
    from inferfleet.localcluster.ports import free_port

    port = free_port()
    late = SimEngine(EngineConfig(model=MODEL, host="127.0.0.1", port=port, drain_seconds=0))

    async def scenario() -> int:
        async with _late_gateway(port) as url, aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(
                session.post(f"{url}/v1/completions", json={"model": MODEL, "max_tokens": 2})
            )
            await asyncio.sleep(0.05)  # the engine starts listening after the gateway's first try failed
            await asyncio.to_thread(late.start)
            response = await request
            return response.status

    try:
        assert asyncio.run(scenario()) == 200
    finally:
        late.stop(drain_seconds=0)


@asynccontextmanager
async def _late_gateway(port: int) -> AsyncIterator[str]:
    gw = Gateway(
        GatewayConfig(host="127.0.0.1", port=0, metrics_address="127.0.0.1", metrics_port=0), kubernetes=False
    )
    await gw.start()
    gw.registry.add_static(route(), (f"127.0.0.1:{port}",))
    try:
        yield f"http://127.0.0.1:{gw.ports[0]}"
    finally:
        await gw.stop()


def test_refused_connections_spend_no_attempt_while_an_untried_endpoint_remains(
    start_engine: Callable[..., SimEngine],
) -> None:
    """Four replicas Ready but not listening yet, one serving: every request is answered, though
    each may meet several refusals, and with two attempts at most."""
    from inferfleet.localcluster.ports import free_port

    live = start_engine(tokens_per_second=500)
    refusing = [f"127.0.0.1:{free_port()}" for _ in range(4)]

    async def scenario() -> tuple[list[int], float]:
        async with (
            gateway_process(route(), live, max_attempts=2) as (url, gw),
            aiohttp.ClientSession() as session,
        ):
            gw.registry.pools[("ns", "svc")].set_endpoints((*refusing, _address(live)))
            statuses = []
            for _ in range(10):
                body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
                async with session.post(f"{url}/v1/completions", json=body) as response:
                    statuses.append(response.status)
            retried = gw.metrics.retries.labels("ns", "svc", "connect")._value.get()
            return statuses, retried

    statuses, retried = asyncio.run(scenario())
    assert statuses == [200] * 10
    assert retried >= 1  # some request did meet a refusal (the tries are spread, then cooled)
