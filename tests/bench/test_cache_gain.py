"""bench.autoscale.cache_gain: the SLO a start model buys at equal GPU-hours."""

from __future__ import annotations

import pytest
from bench.autoscale.cache_gain import compute_best_slo, compute_curves, compute_gain

CURVE = [(6.0, 0.90), (7.0, 0.95), (6.5, 0.93), (8.0, 0.94)]


@pytest.mark.parametrize(
    ("budget", "best"),
    [
        (5.99, None),  # no setting is that cheap
        (6.0, 0.90),
        (6.7, 0.93),
        (7.5, 0.95),
        (9.0, 0.95),  # the dearest setting is not the best one
    ],
)
def test_the_best_slo_within_a_budget_is_the_best_setting_that_fits_it(budget, best):
    assert compute_best_slo(CURVE, budget) == best


@pytest.mark.parametrize(
    ("baseline", "other", "expected"),
    [
        # the same curve gains nothing
        ([(6.0, 0.9), (8.0, 1.0)], [(6.0, 0.9), (8.0, 1.0)], {"mean": 0.0, "min": 0.0, "max": 0.0}),
        # 1.0 reached at 7 instead of 8: +0.1 over half of 6..8
        ([(6.0, 0.9), (8.0, 1.0)], [(6.0, 0.9), (7.0, 1.0)], {"mean": 0.05, "min": 0.0, "max": 0.1}),
        # a cheaper setting below the baseline's cheapest is outside the range: budgets start at 6
        ([(6.0, 0.9), (8.0, 1.0)], [(5.0, 0.9), (8.0, 1.0)], {"mean": 0.0, "min": 0.0, "max": 0.0}),
        # worse at every budget
        ([(6.0, 0.9), (8.0, 1.0)], [(6.0, 0.8), (8.0, 0.9)], {"mean": -0.1, "min": -0.1, "max": -0.1}),
        # the other's cheapest is dearer than the baseline's: the range starts there
        (
            [(6.0, 0.9), (8.0, 1.0)],
            [(7.0, 1.0)],
            {"from_gpu_hours": 7.0, "mean": 0.1, "min": 0.0, "max": 0.1},
        ),
    ],
)
def test_the_gain_is_the_difference_of_best_slos_averaged_over_shared_budgets(baseline, other, expected):
    gain = compute_gain(baseline, other)
    for key, value in expected.items():
        assert gain[key] == pytest.approx(value), key


def test_curves_group_by_workload_and_seed_and_compare_each_cache_model_to_cache_off():
    points = [
        {"workload": "w", "seed": 0, "start_model": model, "min_replicas": m, "gpu_hours": gpu,
         "slo_attainment": slo, "starts_warm": 0, "starts_cold": 1}
        for model, m, gpu, slo in [
            ("cache-off", 1, 6.0, 0.9), ("cache-off", 2, 8.0, 1.0),
            ("cache-on", 1, 6.0, 0.9), ("cache-on", 2, 7.0, 1.0),
            ("cache-on prefetch 2", 1, 6.0, 0.95), ("cache-on prefetch 2", 2, 8.0, 1.0),
            ("cache-on prefetch 4", 1, 6.0, 0.9), ("cache-on prefetch 4", 2, 8.0, 1.0),
        ]
    ]  # fmt: skip
    [result] = compute_curves(points)
    assert set(result["gains"]) == {"cache-on", "cache-on prefetch 2", "cache-on prefetch 4"}
    assert result["gains"]["cache-on"]["mean"] == pytest.approx(0.05)
    assert result["gains"]["cache-on prefetch 2"]["mean"] == pytest.approx(0.05)
    assert result["gains"]["cache-on prefetch 4"]["mean"] == pytest.approx(0.0)
    assert result["default"]["cache-on prefetch 2"]["slo_attainment"] == 0.95
