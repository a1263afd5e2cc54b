"""Only the instance kopf's peering lets work may autoscale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inferfleet.planning.peering import compute_peering_active

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float, lifetime: int = 15) -> dict[str, object]:
    return {
        "priority": priority,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
        "lifetime": lifetime,
    }


@pytest.mark.parametrize(
    ("peers", "active"),
    [
        ({"me": peer(1, 1)}, True),
        ({"me": peer(1, 1), "other": peer(0, 1)}, True),  # the standby has a lower priority
        ({"me": peer(0, 1), "other": peer(1, 1)}, False),  # a higher live peer works instead
        ({"me": peer(0, 1), "other": peer(1, 20)}, True),  # ... until its record expires (kill -9)
        ({"me": peer(1, 1), "other": peer(1, 1)}, False),  # equal priorities: kopf pauses both
        ({"other": peer(0, 1)}, False),  # not registered yet
        ({"me": peer(1, 20)}, False),  # our own record expired: kopf may have paused us
        ({"me": peer(1, 1), "other": {"priority": 5}}, True),  # a malformed record counts as dead
    ],
)
def test_the_highest_live_priority_alone_is_active(peers: dict, active: bool) -> None:
    assert compute_peering_active(peers, "me", int(peers.get("me", {}).get("priority", 0)), NOW) is active
