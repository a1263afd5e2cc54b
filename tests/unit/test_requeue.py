"""When a service is looked at again though no watch event may come."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inferfleet.planning.requeue import (
    POOL_CONFLICT_RECHECK,
    UNEXPLAINED_MISSING_PODS_RECHECK,
    compute_requeue_after,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, None, id="nothing pending: only events"),
        pytest.param({"inventory_changed": True}, 0.0, id="inventory changed while planned: at once"),
        pytest.param({"recheck_at": NOW + timedelta(seconds=30)}, 31.0, id="a refused member's grace ends"),
        pytest.param({"recheck_at": NOW - timedelta(seconds=30)}, 0.0, id="a grace already over: at once"),
        pytest.param({"release_in": 120.0}, 121.0, id="a node hold ends while a group waits"),
        pytest.param(
            {"missing_pods_unexplained": True},
            UNEXPLAINED_MISSING_PODS_RECHECK,
            id="pods missing, no Event yet",
        ),
        pytest.param(
            {"fetch_retry_at": NOW + timedelta(seconds=60)}, 61.0, id="a failed fetch's retry is due"
        ),
        pytest.param({"fetch_retry_at": NOW - timedelta(seconds=5)}, 0.0, id="a retry already due: at once"),
        pytest.param(
            {"provisioning_recheck_at": NOW + timedelta(seconds=30)},
            31.0,
            id="a failed ProvisioningRequest call is tried again",
        ),
        pytest.param({"pool_conflict": True}, POOL_CONFLICT_RECHECK, id="its InferencePool's name was taken"),
        pytest.param(
            {"release_in": 120.0, "missing_pods_unexplained": True, "recheck_at": NOW + timedelta(seconds=5)},
            6.0,
            id="the soonest wins",
        ),
    ],
)
def test_the_soonest_reason_to_look_again_decides(kwargs: dict[str, object], expected: float | None) -> None:
    recheck_at = kwargs.pop("recheck_at", None)
    assert compute_requeue_after(NOW, recheck_at, **kwargs) == expected  # type: ignore[arg-type]
