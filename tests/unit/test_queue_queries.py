import math

import pytest

from inferfleet.planning.queue_queries import (
    QueueSample,
    build_fleet_query,
    parse_fleet_result,
    parse_override_result,
)


def series(ns: str, svc: str, signal: str, value: str) -> dict:
    return {"metric": {"namespace": ns, "inferfleet_io_service": svc, "inferfleet_signal": signal},
            "value": [1700000000.0, value]}  # fmt: skip


def test_one_query_covers_every_engine_grouped_by_service() -> None:
    q = build_fleet_query()
    for metric in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "sglang:num_queue_reqs",
        "tgi_queue_size",
    ):
        assert metric in q
    assert q.count("sum by (namespace, inferfleet_io_service)") == 5


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


def test_one_batched_query_carries_the_completion_rate_per_service() -> None:
    from inferfleet.metrics.prometheus import FleetSample, build_batched_query, parse_batched_result

    query = build_batched_query()
    assert query.startswith(build_fleet_query() + " or ")
    assert "rate(vllm:request_success_total[1m])" in query
    assert '"inferfleet_signal", "completion_rate"' in query

    def series(service: str, signal: str, value: str) -> dict[str, object]:
        metric = {"namespace": "ml", "inferfleet_io_service": service, "inferfleet_signal": signal}
        return {"metric": metric, "value": [0, value]}

    got = parse_batched_result(
        [
            series("a", "waiting", "3"),
            series("a", "running", "40"),
            series("a", "completion_rate", "2.5"),
            series("b", "waiting", "0"),
            series("b", "completion_rate", "NaN"),
            series("c", "completion_rate", "1"),  # a rate without a queue is no sample
        ]
    )
    assert got == {("ml", "a"): FleetSample(3.0, 40.0, 2.5), ("ml", "b"): FleetSample(0.0, None, None)}
