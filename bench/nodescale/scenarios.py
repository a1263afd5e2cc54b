"""The scenarios: node groups (one rack each, at most `max_size` nodes) and how many 405B groups wait.

Each 405B replica group is 2 pods x 8 H100 GPUs in one `inferfleet.io/rack`. The cluster starts
with no H100 node that has 8 free GPUs, so no group fits until the node autoscaler adds nodes.
Node groups are listed in the autoscaler's priority order (cluster-autoscaler's `priority`
expander: the first one that can help is used).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeGroupSpec:
    rack: str
    max_size: int


@dataclass(frozen=True)
class Scenario:
    name: str
    groups: int
    """405B replica groups (the service's replicas) that wait."""
    node_groups: tuple[NodeGroupSpec, ...]
    what: str

    def node_group_name(self, arm: str, rack: str) -> str:
        """Unique per scenario and arm, so that one arm's nodes never count in another's."""
        return f"{self.name}-{arm}-{rack}"


POD_PER_GROUP = 2
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="room-for-3",
        groups=2,
        node_groups=(NodeGroupSpec("rack-x1", 3),),
        what="2 groups wait; the node group may grow by 3 nodes: room for one group and a half",
    ),
    Scenario(
        name="small-rack",
        groups=2,
        node_groups=(NodeGroupSpec("rack-x1", 1), NodeGroupSpec("rack-x2", 4)),
        what="2 groups wait; the preferred node group's rack has room for 1 node, the next one for 4",
    ),
    Scenario(
        name="plenty",
        groups=2,
        node_groups=(NodeGroupSpec("rack-x1", 8),),
        what="2 groups wait; room for both: only the time to Ready differs",
    ),
)


def pick_scenarios(names: str) -> tuple[Scenario, ...]:
    """`names` comma-separated, or "all"."""
    if names == "all":
        return SCENARIOS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {sorted(known)}")
    return tuple(known[n] for n in wanted)
