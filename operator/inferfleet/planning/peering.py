"""Is this operator instance the active one? The same rule kopf's peering applies to its handlers.

kopf pauses the handlers of every instance but the highest-priority live one (all of them when two
live ones share the top priority), but it does not tell other tasks. The autoscaler asks this
before writing, so a standby never scales.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any


def _alive(entry: Mapping[str, Any], now: datetime) -> bool:
    try:
        lastseen = datetime.fromisoformat(str(entry["lastseen"]))
        lifetime = timedelta(seconds=int(entry.get("lifetime", 60)))
    except (KeyError, ValueError):
        return False
    if lastseen.tzinfo is None:
        lastseen = lastseen.replace(tzinfo=now.tzinfo)
    return lastseen + lifetime > now


def compute_peering_active(
    peers: Mapping[str, Mapping[str, Any]], identity: str, priority: int, now: datetime
) -> bool:
    """`peers` is a KopfPeering's status: {identity: {priority, lastseen, lifetime}}."""
    own = peers.get(identity)
    if own is None or not _alive(own, now):
        return False  # not registered yet (or expired): kopf has not resumed us either
    others = [p for i, p in peers.items() if i != identity and _alive(p, now)]
    return not any(int(p.get("priority", 0)) >= priority for p in others)
