import math

import pytest

from inferfleet.planning.queue_queries import (
    QueueSample,
    build_fleet_query,
    compute_fleet_sample,
    compute_override_sample,
    parse_fleet_result,
    parse_override_result,
)
from inferfleet.planning.scaling import ScalerState, ScalingPolicy, ScalingSample, compute_scaling_decision


def series(ns: str, svc: str, signal: str, value: str) -> dict:
    return {"metric": {"namespace": ns, "inferfleet_io_service": svc, "inferfleet_signal": signal},
            "value": [1700000000.0, value]}  # fmt: skip


@pytest.mark.parametrize(
    ("engine", "waiting", "running", "completed"),
    [
        ("vllm", "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:request_success_total"),
        ("sglang", "sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:num_requests_total"),
        ("tgi", "tgi_queue_size", "tgi_batch_current_size", "tgi_request_success"),
    ],
)
def test_one_query_asks_every_engine_for_its_queue_batch_and_completion_rate_by_service(
    engine: str, waiting: str, running: str, completed: str
) -> None:
    q = build_fleet_query()
    by_service = "sum by (namespace, inferfleet_io_service)"
    assert f'label_replace({by_service} ({waiting}), "inferfleet_signal", "waiting", "", "")' in q
    assert f'label_replace({by_service} ({running}), "inferfleet_signal", "running", "", "")' in q
    assert (
        f'label_replace({by_service} (rate({completed}[1m])), "inferfleet_signal", "completion_rate", "", "")'
        in q
    )
    assert q.count(by_service) == 12


def test_results_become_samples_per_service() -> None:
    result = [
        series("ml", "a", "waiting", "3"),
        series("ml", "a", "running", "40"),
        series("ml", "b", "waiting", "0"),
        {"metric": {"namespace": "ml"}, "value": [0, "9"]},  # no service label: ignored
    ]
    assert parse_fleet_result(result) == {
        ("ml", "a"): QueueSample(3.0, 40.0),
        ("ml", "b"): QueueSample(0.0, None),
    }


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf", "garbage", None])
def test_nan_inf_and_garbage_are_missing_not_zero(raw: str | None) -> None:
    [sample] = parse_fleet_result([series("ml", "a", "waiting", raw)]).values()  # type: ignore[arg-type]
    assert sample.waiting is None


def test_an_override_query_sums_its_series_and_treats_any_bad_value_as_missing() -> None:
    assert parse_override_result([{"value": [0, "2"]}, {"value": [0, "3.5"]}]) == QueueSample(5.5, None)
    assert parse_override_result([]) == QueueSample(None, None)
    assert parse_override_result([{"value": [0, "2"]}, {"value": [0, "NaN"]}]) == QueueSample(None, None)
    assert not math.isnan(parse_override_result([{"value": [0, "0"]}]).waiting or 0)


def test_the_completion_rate_rides_with_the_queue_of_its_service() -> None:
    def series(service: str, signal: str, value: str) -> dict[str, object]:
        metric = {"namespace": "ml", "inferfleet_io_service": service, "inferfleet_signal": signal}
        return {"metric": metric, "value": [0, value]}

    got = parse_fleet_result(
        [
            series("a", "waiting", "3"),
            series("a", "running", "40"),
            series("a", "completion_rate", "2.5"),
            series("b", "waiting", "0"),
            series("b", "completion_rate", "NaN"),
            series("c", "completion_rate", "1"),  # a rate without a queue is no sample
            series("d", "waiting", "1"),
            series("d", "completion_rate", "-1"),  # a counter reset Prometheus did not catch
        ]
    )
    assert got == {
        ("ml", "a"): QueueSample(3.0, 40.0, 2.5),
        ("ml", "b"): QueueSample(0.0, None, None),
        ("ml", "d"): QueueSample(1.0, None, None),
    }


@pytest.mark.parametrize(
    ("override", "engines", "sample"),
    [
        # the query's queue, with the engines' running requests and completion rate
        (QueueSample(12.0, None), QueueSample(3.0, 8.0, 1.5), QueueSample(12.0, 8.0, 1.5)),
        # engines that report nothing: the query is the whole signal
        (QueueSample(12.0, None), None, QueueSample(12.0, 0.0)),
        (QueueSample(12.0, None), QueueSample(3.0, None), QueueSample(12.0, 0.0)),
        # no number from the query: no sample, whatever the engines say
        (QueueSample(None, None), QueueSample(3.0, 8.0, 1.5), QueueSample(None, None)),
    ],
)
def test_a_scaling_query_supplies_the_queue_and_the_engines_the_rest(
    override: QueueSample, engines: QueueSample | None, sample: QueueSample
) -> None:
    assert compute_override_sample(override, engines) == sample


def test_a_running_service_whose_query_reports_a_queue_scales_up() -> None:
    # Issue 13 item 3: the query's sample had no running requests, so the policy held.
    policy = ScalingPolicy(min_replicas=1, max_replicas=4, target_queue_depth=2, max_concurrent_requests=4)
    sample = compute_override_sample(parse_override_result([{"metric": {}, "value": [0, "12"]}]), None)
    decision, _ = compute_scaling_decision(
        ScalingSample(sample.waiting, sample.running, sample.completion_rate),
        policy,
        1,
        1,
        ScalerState(),
        0.0,
    )
    assert (decision.replicas, decision.reason) == (2, "QueueAboveTarget")


def test_the_same_query_asks_the_gateway_for_its_queue_in_flight_and_arrivals() -> None:
    q = build_fleet_query()
    by_service = "sum by (namespace, inferfleet_io_service)"
    assert f'{by_service} (inferfleet_gateway_queued_requests), "inferfleet_signal", "gateway_waiting"' in q
    assert (
        f'{by_service} (inferfleet_gateway_in_flight_requests), "inferfleet_signal", "gateway_running"' in q
    )
    rate = "rate(inferfleet_gateway_arrivals_total[1m])"
    assert f'{by_service} ({rate}), "inferfleet_signal", "arrival_rate"' in q


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {"waiting": 3, "running": 40, "completion_rate": 2.5},
            QueueSample(3.0, 40.0, 2.5, None),
            id="engines-only-as-before",
        ),
        pytest.param(
            {
                "waiting": 3,
                "running": 40,
                "completion_rate": 2.5,
                "gateway_waiting": 50,
                "gateway_running": 40,
                "arrival_rate": 9.0,
            },
            QueueSample(53.0, 40.0, 2.5, 9.0),
            id="both-queues-count-and-arrivals-at-the-door",
        ),
        pytest.param(
            {"gateway_waiting": 2, "gateway_running": 0, "arrival_rate": 0.1},
            QueueSample(2.0, 0.0, None, 0.1),
            id="zero-replicas-gateway-holds-requests",
        ),
        pytest.param(
            {"running": 4, "gateway_waiting": 0, "gateway_running": 4},
            QueueSample(None, 4.0, None, None),
            id="engines-queue-missing-stays-missing",
        ),
        pytest.param({"gateway_waiting": None}, QueueSample(None, 0.0, None, None), id="gateway-queue-nan"),
        pytest.param({"completion_rate": 1.0}, None, id="no-queue-anywhere"),
        pytest.param(
            {"waiting": 3, "running": 12, "kv_cache_usage": 0.93, "gateway_waiting": 1},
            QueueSample(4.0, 12.0, None, None, 0.93),
            id="kv-cache-usage-rides-along",
        ),
    ],
)
def test_compute_fleet_sample(values: dict[str, float | None], expected: QueueSample | None) -> None:
    assert compute_fleet_sample(values) == expected


def test_arrivals_counted_at_the_door_size_a_saturated_fleet_for_its_real_load() -> None:
    # Issue 16: saturated, completions are capped at the fleet's pace (4/s) and the queue hovers,
    # so the engines alone say 4 req/s; the gateway counted 8 req/s arriving.
    policy = ScalingPolicy(min_replicas=1, max_replicas=16, target_queue_depth=4, max_concurrent_requests=8)

    def decide(arrivals: float | None) -> int:
        sample = ScalingSample(waiting=10.0, running=32.0, completion_rate=4.0, arrival_rate=arrivals)
        decision, _ = compute_scaling_decision(sample, policy, 4, 4, ScalerState(), 0.0)
        return decision.replicas

    engines_only, at_the_door = decide(None), decide(8.0)
    assert at_the_door >= 8  # 8 req/s x 8 s each = 64 running requests = 8 replicas of 8 slots
    assert at_the_door > engines_only


@pytest.mark.parametrize(
    ("engine", "gauges"),
    [
        ("vllm", ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]),  # the older name second
        ("sglang", ["sglang:token_usage"]),
    ],
)
def test_the_same_query_asks_for_the_mean_kv_cache_usage(engine: str, gauges: list[str]) -> None:
    q = build_fleet_query()
    by_service = "avg by (namespace, inferfleet_io_service)"
    tagged = [
        f'label_replace({by_service} ({g}), "inferfleet_signal", "kv_cache_usage", "", "")' for g in gauges
    ]
    assert all(t in q for t in tagged)
    assert [q.index(t) for t in tagged] == sorted(q.index(t) for t in tagged)  # `or` keeps the first
    assert q.count(by_service) == 3  # vLLM's two names and SGLang's: TGI exports none


def test_kv_cache_usage_is_parsed_and_kept_by_a_scaling_query_override() -> None:
    result = [
        series("ml", "a", "waiting", "0"),
        series("ml", "a", "running", "6"),
        series("ml", "a", "kv_cache_usage", "0.95"),
    ]
    sample = parse_fleet_result(result)[("ml", "a")]
    assert sample.kv_cache_usage == 0.95
    assert compute_override_sample(QueueSample(7.0, None), sample).kv_cache_usage == 0.95
    nan = [*result[:2], series("ml", "a", "kv_cache_usage", "NaN")]
    assert parse_fleet_result(nan)[("ml", "a")].kv_cache_usage is None
