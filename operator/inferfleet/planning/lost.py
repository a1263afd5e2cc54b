"""Which replica groups are lost and restart whole, and which nodes new placements avoid.

A group is lost when a member's node is gone, NotReady, cordoned or tainted with a taint the
service does not tolerate, or when the scheduler refused a member its planned node: its GPUs
were taken by a pod bound after the plan (the plan reserves GPUs only against inferfleet), or
it kept refusing past the grace (see planning/stuck.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from inferfleet.api import SchedulingSpec
from inferfleet.planning.groups import group_key
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.placement import BoundPod
from inferfleet.planning.stuck import UnschedulableMember, compute_stuck_groups


@dataclass(frozen=True)
class LostGroup:
    group: ObservedGroup
    why: str
    """What the operator logs about it."""


@dataclass(frozen=True)
class LostGroups:
    lost: tuple[LostGroup, ...] = ()
    refused_nodes: frozenset[str] = field(default_factory=frozenset)
    """Planned nodes that refused a member: new placements avoid them for a while."""
    recheck_at: datetime | None = None
    """When a refused member's grace ends (the scheduler may get past it by itself until then)."""

    @property
    def groups(self) -> list[ObservedGroup]:
        return [lost.group for lost in self.lost]


def compute_lost_groups(
    namespace: str,
    groups: Iterable[ObservedGroup],
    scheduling: SchedulingSpec | None,
    nodes: Iterable[GpuNode],
    members: list[UnschedulableMember],
    bound: Iterable[BoundPod],
    now: datetime,
) -> LostGroups:
    """The service's groups to restart whole elsewhere (`scheduling` None: the spec does not parse)."""
    healthy = {node.name for node in nodes if node.accepts(scheduling)}
    stuck = compute_stuck_groups(members, now)
    bound = list(bound)
    lost: list[LostGroup] = []
    refused: set[str] = set()
    for group in groups:
        gone = [n for n in group.nodes if n not in healthy]
        if gone:
            why = (
                f"replica group {group.replica} lost {gone} (gone, NotReady, cordoned or tainted); "
                "restarting it whole"
            )
        elif (group.replica, group.uid) in stuck.restart:
            # The planned nodes its bound members do not hold refused the others.
            key = group_key(namespace, group.service, group.replica)
            refused |= set(group.nodes) - {p.node for p in bound if p.group == key}
            messages = [m.message for m in members if (m.replica, m.group_uid) == (group.replica, group.uid)]
            why = (
                f"replica group {group.replica}: the scheduler refused a member its planned node "
                f"({messages[0] if messages else 'no message'}); restarting it whole elsewhere"
            )
        else:
            continue
        lost.append(LostGroup(group, why))
    return LostGroups(tuple(lost), frozenset(refused), stuck.recheck_at)
