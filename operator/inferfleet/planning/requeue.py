"""When to look at a service again though no watch event may come."""

from __future__ import annotations

from datetime import datetime

NAME_CONFLICT_RECHECK = 60.0
"""Seconds until a service whose child name is taken tries again (the other object is not watched)."""
POOL_CONFLICT_RECHECK = 300.0
"""Seconds until a service whose InferencePool's name another object holds tries again: less often
than a conflict of a child it needs, as a platform may keep its own pool there on purpose."""
UNEXPLAINED_MISSING_PODS_RECHECK = 15.0
"""Seconds until a group whose StatefulSet lacks pods is looked at again when no FailedCreate
Event says why yet (the controller posts it asynchronously, after the status update that
told us)."""


def compute_requeue_after(
    now: datetime,
    recheck_at: datetime | None,
    *,
    release_in: float | None = None,
    missing_pods_unexplained: bool = False,
    inventory_changed: bool = False,
    fetch_retry_at: datetime | None = None,
    provisioning_recheck_at: datetime | None = None,
    pool_conflict: bool = False,
) -> float | None:
    """Seconds until the service must be reconciled again, or None: at once if it waits for GPUs
    and the inventory changed while it was planned, when a refused member's grace ends
    (`recheck_at`), when a node hold ends while a group waits for capacity (`release_in`, given
    only then), when a group lacks pods and no Event says why yet, or when a failed fetch of
    its weights is due for its retry (`fetch_retry_at`: nothing else wakes it then), or when a
    call about its ProvisioningRequests failed or a request's answer is due
    (`provisioning_recheck_at`), or when its InferencePool's name was taken (`pool_conflict`)."""
    delays = [UNEXPLAINED_MISSING_PODS_RECHECK] if missing_pods_unexplained else []
    if pool_conflict:
        delays.append(POOL_CONFLICT_RECHECK)
    for at in (fetch_retry_at, provisioning_recheck_at):
        if at is not None:
            delays.append((at - now).total_seconds() + 1.0)
    if inventory_changed:
        delays.append(0.0)
    if recheck_at is not None:
        delays.append((recheck_at - now).total_seconds() + 1.0)
    if release_in is not None:
        delays.append(release_in + 1.0)
    return max(0.0, min(delays)) if delays else None
