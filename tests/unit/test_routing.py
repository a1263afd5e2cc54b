"""The request path's pure decisions (planning/routing.py): tables."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.planning.routing import (
    RetryBudget,
    RouteError,
    Scope,
    ServiceRoute,
    build_endpoints,
    build_service_route,
    compute_retry,
    compute_retry_backoff,
    pick_endpoint,
    plan_wait,
    resolve_route,
)

A = ServiceRoute("team-a", "chat", "llama")
B = ServiceRoute("team-b", "chat", "llama")
C = ServiceRoute("team-a", "code", "coder")
ROUTES = [A, B, C]


@pytest.mark.parametrize(
    ("model", "scope", "expected"),
    [
        pytest.param("coder", Scope(), C, id="unique-model-anywhere"),
        pytest.param("llama", Scope("team-b"), B, id="namespace-narrows"),
        pytest.param("llama", Scope("team-a", "chat"), A, id="service-path"),
        pytest.param(None, Scope("team-a", "code"), C, id="service-path-needs-no-model"),
        pytest.param("llama", Scope(), 400, id="two-namespaces-is-ambiguous"),
        pytest.param("gpt-5", Scope(), 404, id="unknown-model"),
        pytest.param("coder", Scope("team-b"), 404, id="not-in-that-namespace"),
        pytest.param("coder", Scope("team-a", "chat"), 404, id="service-serves-another-model"),
        pytest.param("llama", Scope("team-c", "chat"), 404, id="no-such-service"),
        pytest.param(None, Scope(), 400, id="model-required"),
        pytest.param(7, Scope(), 400, id="model-not-a-string"),
    ],
)
def test_resolve_route(model: Any, scope: Scope, expected: ServiceRoute | int) -> None:
    got = resolve_route(ROUTES, model, scope)
    if isinstance(expected, int):
        assert isinstance(got, RouteError)
        assert got.status == expected
        assert got.body()["error"]["message"]
    else:
        assert got == expected


def test_ambiguous_model_names_every_base_url_and_never_picks() -> None:
    got = resolve_route(ROUTES, "llama", Scope())
    assert isinstance(got, RouteError)
    assert got.code == "ambiguous_model"
    assert "/namespaces/team-a/services/chat/v1" in got.message
    assert "/namespaces/team-b/services/chat/v1" in got.message


def _slice(*endpoints: dict[str, Any], port: int = 8000, port_name: str = "http") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "s-abc", "labels": {"kubernetes.io/service-name": "s"}},
        "ports": [{"name": port_name, "port": port}],
        "endpoints": list(endpoints),
    }


def _ep(ip: str, **conditions: bool | None) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions}


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        pytest.param([_slice(_ep("127.64.0.1", ready=True))], ("127.64.0.1:8000",), id="ready"),
        pytest.param([_slice(_ep("127.64.0.1", ready=None))], ("127.64.0.1:8000",), id="nil-ready-is-ready"),
        pytest.param([_slice(_ep("127.64.0.1", ready=False))], (), id="not-ready"),
        pytest.param(
            [_slice(_ep("127.64.0.1", ready=False, serving=True, terminating=True))], (), id="draining"
        ),
        pytest.param([_slice(_ep("127.64.0.1", ready=True), port_name="metrics")], (), id="no-http-port"),
        pytest.param([_slice(_ep("fd00::1", ready=True))], ("[fd00::1]:8000",), id="ipv6"),
        pytest.param(
            [_slice(_ep("127.64.0.2", ready=True)), _slice(_ep("127.64.0.1", ready=True))],
            ("127.64.0.1:8000", "127.64.0.2:8000"),
            id="two-slices",
        ),
    ],
)
def test_build_endpoints(slices: list[dict[str, Any]], expected: tuple[str, ...]) -> None:
    assert build_endpoints(slices) == expected


@pytest.mark.parametrize(
    ("in_flight", "slots", "exclude", "turn", "expected"),
    [
        pytest.param({"a": 3, "b": 1, "c": 2}, 4, (), 0, "b", id="least-outstanding"),
        pytest.param({"a": 1, "b": 1}, 4, (), 0, "a", id="tie-first-turn"),
        pytest.param({"a": 1, "b": 1}, 4, (), 1, "b", id="tie-next-turn"),
        pytest.param({"a": 4, "b": 4}, 4, (), 0, None, id="all-slots-taken"),
        pytest.param({"a": 0, "b": 2}, 4, ("a",), 0, "b", id="excluded-after-failure"),
        pytest.param({}, 4, (), 0, None, id="no-endpoints"),
        # below 8 outstanding the least is strict: one request more is a real difference
        pytest.param({"a": 7, "b": 8}, 64, (), 1, "a", id="small-loads-strict"),
        # 250 against 245: within an eighth, a tie taken in turn, so no replica is picked for
        # having just finished a decode step
        pytest.param({"a": 250, "b": 245, "c": 300}, 1000, (), 0, "a", id="near-least-tie-first-turn"),
        pytest.param({"a": 250, "b": 245, "c": 300}, 1000, (), 1, "b", id="near-least-tie-next-turn"),
        pytest.param({"a": 8, "b": 9}, 64, (), 1, "b", id="from-8-outstanding-one-more-ties"),
        pytest.param({"a": 276, "b": 245}, 1000, (), 0, "b", id="beyond-an-eighth-not-a-tie"),
        pytest.param({"a": 250, "b": 245}, 250, (), 0, "b", id="a-full-replica-is-no-tie"),
    ],
)
def test_pick_endpoint(
    in_flight: dict[str, int], slots: int, exclude: tuple[str, ...], turn: int, expected: str | None
) -> None:
    assert pick_endpoint(in_flight, slots, frozenset(exclude), turn) == expected


def test_an_endpoint_beyond_the_tie_band_is_never_taken_in_turn() -> None:
    picks = {pick_endpoint({"a": 250, "b": 245, "c": 300}, 1000, frozenset(), turn) for turn in range(6)}
    assert picks == {"a", "b"}


ZERO = ServiceRoute("ns", "s", "m", replicas=0, may_activate=True, queue_timeout=60, activation_timeout=300)


@pytest.mark.parametrize(
    ("route", "ready", "timeout", "activate", "refused"),
    [
        pytest.param(ServiceRoute("ns", "s", "m", queue_timeout=60), 2, 60, False, None, id="queue-wait"),
        pytest.param(ZERO, 0, 300, True, None, id="wake-from-zero"),
        pytest.param(
            ServiceRoute("ns", "s", "m", replicas=1, may_activate=True, activation_timeout=300),
            0,
            300,
            False,
            None,
            id="replica-starting",
        ),
        pytest.param(
            ServiceRoute("ns", "s", "m", replicas=0, may_activate=False),
            0,
            0,
            False,
            "does not scale from zero",
            id="zero-without-scaling",
        ),
        pytest.param(
            ServiceRoute("ns", "s", "m", replicas=1, blocked="InsufficientCapacity: needs 8 GPUs"),
            0,
            0,
            False,
            "InsufficientCapacity: needs 8 GPUs",
            id="cannot-be-placed-says-so-at-once",
        ),
    ],
)
def test_plan_wait(
    route: ServiceRoute, ready: int, timeout: float, activate: bool, refused: str | None
) -> None:
    plan = plan_wait(route, ready)
    assert (plan.timeout, plan.activate) == (timeout, activate)
    if refused is None:
        assert plan.refuse is None
    else:
        assert plan.refuse is not None
        assert plan.refuse.status == 503
        assert refused in plan.refuse.message
        assert plan.refuse.retry_after is not None


@pytest.mark.parametrize(
    ("status", "sent", "attempt", "expected"),
    [
        (None, False, 1, True),
        (502, False, 1, True),
        (503, False, 2, True),
        (503, False, 3, False),
        (500, False, 1, False),
        (429, False, 1, False),
        (None, True, 1, False),
    ],
)
def test_compute_retry(status: int | None, sent: bool, attempt: int, expected: bool) -> None:
    assert compute_retry(status, sent, attempt, max_attempts=3) is expected


def test_retry_budget_caps_retries_of_a_sick_fleet_and_recovers() -> None:
    budget = RetryBudget(ratio=0.2, floor=3, window=10.0)
    for i in range(100):
        budget.record_request(i * 0.01)
    allowed = sum(budget.try_spend(1.0) for _ in range(100))
    assert allowed == 3 + 20
    assert budget.try_spend(20.0)  # the window moved on: retries allowed again


def test_retry_budget_forgets_requests_older_than_its_window_without_retries() -> None:
    budget = RetryBudget(window=10.0)
    for i in range(100_000):
        budget.record_request(i * 0.01)  # 1000 s of 100 req/s and never a retry
    assert budget.remembered <= 1001


def _service(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "s", "generation": 4},
        "spec": {
            "model": {"name": "m", "source": "hf://org/m", "parametersBillions": 8},
            "engine": {"kind": "vllm", "maxConcurrentRequests": 16},
            "replicas": 0,
            "scaling": {"minReplicas": 0, "maxReplicas": 3, "activationTimeoutSeconds": 120},
            "gateway": {"maxQueuedRequests": 5, "queueTimeoutSeconds": 30},
        },
        "status": status,
    }


def test_build_service_route_reads_slots_queue_and_activation() -> None:
    route = build_service_route(_service())
    assert route == ServiceRoute(
        "ns",
        "s",
        "m",
        slots_per_replica=16,
        max_queued=5,
        queue_timeout=30.0,
        replicas=0,
        may_activate=True,
        activation_timeout=120.0,
        blocked=None,
    )


@pytest.mark.parametrize(
    ("generation", "reason", "blocked"),
    [
        (4, "InsufficientCapacity", True),
        (3, "InsufficientCapacity", False),  # an older generation's verdict says nothing now
        (4, "Deploying", False),
        (4, "ScaledToZero", False),
    ],
)
def test_blocked_only_by_a_current_verdict_that_waiting_cannot_change(
    generation: int, reason: str, blocked: bool
) -> None:
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": reason,
        "message": "why",
        "observedGeneration": generation,
    }
    route = build_service_route(_service(conditions=[condition]))
    assert route is not None
    assert (route.blocked is not None) is blocked


def test_retry_backoff_doubles_and_is_capped() -> None:
    assert [compute_retry_backoff(a) for a in (1, 2, 3, 10)] == [0.1, 0.2, 0.4, 2.0]
