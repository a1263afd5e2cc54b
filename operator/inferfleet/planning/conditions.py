"""Kubernetes-style conditions (as kueue's Set*Condition helpers), on the typed status.

`lastTransitionTime` changes only when `status` flips; reason, message and
observedGeneration are updated in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inferfleet.api import Condition, ConditionReason, ConditionStatus, ConditionType

MAX_MESSAGE_LENGTH = 1024
"""Characters of a condition or Event message: a summary a user reads, never a dump that grows with
the spec (a status write of a megabyte fails, and fails every tenant's reconciles with it)."""


@dataclass(frozen=True)
class ConditionUpdate:
    type: ConditionType
    status: bool
    reason: ConditionReason
    message: str


def rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: object) -> datetime | None:
    """A time as Kubernetes writes it (`rfc3339`'s form, or with an offset); None when it is
    missing or not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def bound_message(message: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """`message`, cut to at most `limit` characters with a note of how much was left out."""
    if len(message) <= limit:
        return message
    cut = max(0, limit - len(f"… ({len(message)} more characters)"))
    return f"{message[:cut]}… ({len(message) - cut} more characters)"


def find_true_condition(conditions: Iterable[Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition `type_` when its status is "True", among conditions as plain dicts (a pod's,
    a node's, a Job's, as listed or watched); None when absent or not True."""
    for condition in conditions or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition if condition.get("status") == "True" else None
    return None


def find_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    """A condition of a status as plain dicts (as written or watched)."""
    return next((c for c in conditions if c.get("type") == type_), None)


def merge_condition(
    conditions: Sequence[Condition], now: datetime, update: ConditionUpdate, generation: int
) -> list[Condition]:
    """`conditions` with `update` set (others untouched, in their order; a new type goes last)."""
    status = ConditionStatus.TRUE if update.status else ConditionStatus.FALSE
    current = next((c for c in conditions if c.type == update.type), None)
    flipped = current is None or current.status != status
    when = rfc3339(now) if flipped or current is None else current.last_transition_time
    wanted = Condition(
        type=update.type,
        status=status,
        reason=update.reason,
        message=bound_message(update.message),
        observed_generation=generation,
        last_transition_time=when,
    )
    if current is None:
        return [*conditions, wanted]
    return [wanted if c is current else c for c in conditions]
