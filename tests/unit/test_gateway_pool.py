"""A service's slots and FIFO queue (gateway/pool.py, slots.py); what the registry makes of watch events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import generate_latest

from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.gateway.pool import ServicePool
from inferfleet.gateway.registry import Registry
from inferfleet.gateway.slots import RefusedError, take_slot
from inferfleet.planning.prefix_routing import LoadBound
from inferfleet.planning.routing import ServiceRoute

pytestmark = pytest.mark.unit
ROUTE = ServiceRoute("ns", "svc", "m", slots_per_replica=1, max_queued=3, queue_timeout=5)


def never_activate(route: ServiceRoute) -> None:
    raise AssertionError("no activation expected")


def test_waiters_get_freed_slots_first_come_first_served() -> None:
    async def scenario() -> list[int]:
        pool = ServicePool(ROUTE, ("a:1",))
        loop = asyncio.get_running_loop()
        first = await take_slot(pool, never_activate, loop.time())
        served: list[int] = []

        async def wait(i: int) -> None:
            endpoint = await take_slot(pool, never_activate, loop.time())
            served.append(i)
            pool.release(endpoint)

        waiters = [asyncio.ensure_future(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert pool.queued == 3
        assert pool.try_acquire() is None  # a newcomer does not overtake the queue
        pool.release(first)
        await asyncio.gather(*waiters)
        return served

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_a_new_ready_endpoint_takes_waiters_at_once() -> None:
    async def scenario() -> str:
        pool = ServicePool(ROUTE, ())
        route = ServiceRoute("ns", "svc", "m", replicas=1, may_activate=True, activation_timeout=30)
        pool.set_route(route)
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(take_slot(pool, never_activate, loop.time()))
        await asyncio.sleep(0)
        pool.set_endpoints(("b:1",))
        return await asyncio.wait_for(waiting, 1)

    assert asyncio.run(scenario()) == "b:1"


def test_queue_full_and_timeout_are_refused_with_their_status() -> None:
    async def scenario() -> tuple[int, int]:
        route = ServiceRoute("ns", "svc", "m", slots_per_replica=1, max_queued=1, queue_timeout=0.05)
        pool = ServicePool(route, ("a:1",))
        loop = asyncio.get_running_loop()
        await take_slot(pool, never_activate, loop.time())
        waiting = asyncio.ensure_future(take_slot(pool, never_activate, loop.time()))
        await asyncio.sleep(0)
        with pytest.raises(RefusedError) as full:
            await take_slot(pool, never_activate, loop.time())
        with pytest.raises(RefusedError) as late:
            await waiting
        assert pool.queued == 0
        return full.value.error.status, late.value.error.status

    assert asyncio.run(scenario()) == (429, 503)


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": 1},
        "spec": {"model": {"name": "m", "source": "hf://o/m", "parametersBillions": 8},
                 "engine": {"kind": "vllm"}, "replicas": 1, **spec},
    }  # fmt: skip


def _slice(service: str, *ips: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": f"{service}-x",
            "labels": {"kubernetes.io/service-name": service},
        },
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }


def test_slices_before_their_service_and_a_deleted_service_refuses_its_waiters_at_once() -> None:
    async def scenario() -> str:
        registry = Registry(GatewayMetrics())
        registry.upsert_slice(_slice("svc", "198.18.0.2"))  # the slice's event came first
        registry.upsert_service(_service("svc"))
        pool = registry.pools[("ns", "svc")]
        assert pool.endpoints == ("198.18.0.2:8000",)
        registry.upsert_slice(_slice("svc"))  # the replica went away
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(take_slot(pool, never_activate, loop.time()))
        await asyncio.sleep(0)
        registry.delete_service(("ns", "svc"))
        with pytest.raises(RefusedError) as refused:
            await asyncio.wait_for(waiting, 1)
        return refused.value.error.message

    assert "deleted" in asyncio.run(scenario())


def test_an_endpoint_that_left_and_went_idle_leaves_no_series() -> None:
    async def scenario() -> str:
        metrics = GatewayMetrics()
        registry = Registry(metrics)
        registry.upsert_service(_service("svc"))
        registry.upsert_slice(_slice("svc", "198.18.0.2"))
        pool = registry.pools[("ns", "svc")]
        endpoint = pool.try_acquire()
        assert endpoint == "198.18.0.2:8000"
        registry.upsert_slice(_slice("svc"))
        pool.release(endpoint)
        return generate_latest(metrics.registry).decode()

    assert "198.18.0.2" not in asyncio.run(scenario())


def test_a_deleted_service_leaves_no_series() -> None:
    metrics = GatewayMetrics()
    registry = Registry(metrics)
    for name in ("svc", "kept"):
        registry.upsert_service(_service(name))
        metrics.arrivals.labels("ns", name).inc()
        metrics.responses.labels("ns", name, "200").inc()
        metrics.responses.labels("ns", name, "503").inc()
        metrics.retries.labels("ns", name, "connect").inc()
        metrics.duration.labels("ns", name).observe(0.5)
    registry.delete_service(("ns", "svc"))
    text = generate_latest(metrics.registry).decode()
    assert 'service="svc"' not in text
    assert text.count('service="kept"') > 5  # counters, retries and the histogram's series stay


ROOMY = ServiceRoute("ns", "svc", "m", slots_per_replica=8, max_queued=3, queue_timeout=5)


def picks(pool: ServicePool, count: int) -> list[str | None]:
    """Where `count` requests go one after another, each done before the next."""
    out = []
    for _ in range(count):
        endpoint = pool.try_acquire()
        out.append(endpoint)
        if endpoint is not None:
            pool.release(endpoint)
    return out


def test_an_endpoint_that_failed_gets_nothing_new_for_a_moment_that_grows() -> None:
    """A replica Ready but not yet listening (or just dead) would otherwise draw every least-load
    pick at once, and each of them a retry: a burst of them spends the whole retry budget."""
    now = [100.0]
    pool = ServicePool(ROOMY, ("dead:1", "live:1"), clock=lambda: now[0])
    assert set(picks(pool, 2)) == {"dead:1", "live:1"}  # idle and equal: taken in turn
    pool.report_failure("dead:1")
    assert picks(pool, 4) == ["live:1"] * 4
    now[0] += 0.11  # past the first moment (0.1 s)
    assert "dead:1" in picks(pool, 2)
    pool.report_failure("dead:1")  # failed again: avoided twice as long
    now[0] += 0.11
    assert picks(pool, 4) == ["live:1"] * 4
    now[0] += 0.1
    assert "dead:1" in picks(pool, 2)
    pool.report_success("dead:1")
    pool.report_failure("live:1")
    assert picks(pool, 3) == ["dead:1"] * 3


def test_when_every_endpoint_is_failing_one_is_still_tried() -> None:
    pool = ServicePool(ROOMY, ("a:1",), clock=lambda: 0.0)
    pool.report_failure("a:1")
    assert picks(pool, 1) == ["a:1"]  # better than refusing: it may be listening by now
    pool.set_endpoints(("b:1",))
    pool.set_endpoints(("a:1", "b:1"))
    assert set(picks(pool, 2)) == {"a:1", "b:1"}  # a:1 left and came back: its failures forgotten


def test_least_load_takes_near_least_endpoints_in_turn_between_prefix_picks() -> None:
    route = ServiceRoute("ns", "svc", "m", slots_per_replica=1000, max_queued=3, queue_timeout=5)
    pool = ServicePool(route, ("a:1", "b:1"), load_bound=LoadBound(0.25, slack=0))
    pool.in_flight.update({"a:1": 100, "b:1": 100})  # within an eighth of each other: ties
    least_load_picks = []
    for _ in range(4):
        prefixed = pool.try_acquire(blocks=(11, 12))  # a conversation's turn: prefix affinity
        assert prefixed is not None
        pool.release(prefixed)
        picked = pool.try_acquire()  # no prompt blocks: least load
        assert picked is not None
        least_load_picks.append(picked)
        pool.release(picked)
    assert least_load_picks == ["a:1", "b:1", "a:1", "b:1"]
