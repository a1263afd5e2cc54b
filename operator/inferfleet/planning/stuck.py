"""Which replica groups with an Unschedulable member restart whole, and when to look again.

A group's members are pinned to the nodes its plan chose. When the kube-scheduler cannot bind
one, the group restarts whole on other nodes, unless the refusal is one the scheduler gets past
by itself: a node that just joined keeps the node.kubernetes.io/not-ready taint for a few
seconds after it is Ready, and the scheduler's cache can lag the watch the plan was made from.
Only a lack of resources ("Insufficient nvidia.com/gpu": another pod took the GPUs between the
plan and the binding) is certain at once; any other refusal gets a grace period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

UNSCHEDULABLE_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class UnschedulableMember:
    replica: int
    group_uid: str
    """uid of the member's StatefulSet: a member of an earlier group under the same replica
    number does not count against the new one."""
    message: str
    since: datetime | None
    """When the scheduler first refused it (the PodScheduled condition's lastTransitionTime)."""

    @property
    def lacks_resources(self) -> bool:
        return "Insufficient " in self.message


@dataclass(frozen=True)
class StuckGroups:
    restart: frozenset[tuple[int, str]]
    """(replica, StatefulSet uid) of the groups to restart whole now."""
    recheck_at: datetime | None
    """When a member still within its grace period runs out of it."""


def find_refusal(conditions: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """A pod's PodScheduled condition when the scheduler refused it (reason Unschedulable)."""
    return next(
        (
            c
            for c in conditions
            if (c.get("type"), c.get("status"), c.get("reason")) == ("PodScheduled", "False", "Unschedulable")
        ),
        None,
    )


def is_unschedulable(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> bool:
    """Whether a pod is unbound and the scheduler refused it."""
    conditions = (status or {}).get("conditions") or []
    return not (spec or {}).get("nodeName") and find_refusal(conditions) is not None


def build_unschedulable_member(
    replica: int, group_uid: str, conditions: Iterable[Mapping[str, Any]]
) -> UnschedulableMember | None:
    """The member's refusal from its pod's conditions; None when the scheduler has not refused it."""
    refusal = find_refusal(conditions)
    if refusal is None:
        return None
    return UnschedulableMember(replica, group_uid, str(refusal.get("message") or ""), _parse(refusal))


def _parse(condition: Mapping[str, Any]) -> datetime | None:
    raw = condition.get("lastTransitionTime")
    try:
        return datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def compute_stuck_groups(
    members: Iterable[UnschedulableMember], now: datetime, grace: timedelta = UNSCHEDULABLE_GRACE
) -> StuckGroups:
    restart: set[tuple[int, str]] = set()
    recheck_at: datetime | None = None
    for member in members:
        key = (member.replica, member.group_uid)
        if member.lacks_resources or member.since is None or now - member.since >= grace:
            restart.add(key)
        else:
            due = member.since + grace
            recheck_at = due if recheck_at is None else min(recheck_at, due)
    return StuckGroups(frozenset(restart), recheck_at)
