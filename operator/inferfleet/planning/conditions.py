"""Kubernetes-style conditions on plain status dicts (as kueue's Set*Condition helpers).

`lastTransitionTime` changes only when `status` flips; reason, message and
observedGeneration are updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_MESSAGE_LENGTH = 1024
"""Characters of a condition or Event message: a summary a user reads, never a dump that grows with
the spec (a status write of a megabyte fails, and fails every tenant's reconciles with it)."""


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: bool
    reason: str
    message: str


def rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bound_message(message: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """`message`, cut to at most `limit` characters with a note of how much was left out."""
    if len(message) <= limit:
        return message
    cut = max(0, limit - len(f"… ({len(message)} more characters)"))
    return f"{message[:cut]}… ({len(message) - cut} more characters)"


def find_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def set_condition(
    conditions: list[dict[str, Any]], now: datetime, update: ConditionUpdate, generation: int
) -> bool:
    """Set `update` in `conditions` (mutated); True when anything a user sees changed."""
    status = "True" if update.status else "False"
    wanted = {
        "type": update.type,
        "status": status,
        "reason": update.reason,
        "message": bound_message(update.message),
        "observedGeneration": generation,
    }
    current = find_condition(conditions, update.type)
    if current is None:
        conditions.append({**wanted, "lastTransitionTime": rfc3339(now)})
        return True
    if all(current.get(k) == v for k, v in wanted.items()):
        return False
    if current.get("status") != status:
        current["lastTransitionTime"] = rfc3339(now)
    current.update(wanted)
    return True
