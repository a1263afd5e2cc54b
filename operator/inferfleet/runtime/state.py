"""What this operator process last saw and wrote per InferenceService, and its node holds.

The work queue never runs one service's key on two workers at once, but the autoscaler's tick
writes the same service's status from its own thread. Status is computed and written under the
service's lock, from the newest Deployment any watch event offered, and compared with the
status this process last wrote, so an older observation can never overwrite a newer status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.scaling import ScalerState
from inferfleet.planning.service import Blocked
from inferfleet.planning.status import ObservedDeployment

Key = tuple[str, str]


def _resource_version(obj: Mapping[str, Any]) -> int:
    # Opaque by contract, but etcd revisions of one object only grow; a non-number sorts first.
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
    return int(value) if value.isdigit() else 0


@dataclass
class ServiceState:
    uid: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    deployment: ObservedDeployment | None = None
    deployment_version: int = -1
    applied_generation: int | None = None
    """The Deployment's generation right after our last apply: a newer one means a hand edit."""
    written_status: dict[str, Any] | None = None
    apply_error: Blocked | None = None
    """Why the last apply of a child failed (ApplyFailed, NameConflict), None after all succeed
    (reported in Ready)."""
    children: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, name) -> uid of the children this process saw this service control: applied
    directly, while any other child is created first (see kube/apply.py apply_child)."""
    seen_generation: int | None = None
    """The generation whose watch event last enqueued the service (a status write keeps it)."""
    warned_generation: int | None = None
    """The generation whose spec warnings (literal secrets) were posted as Events."""
    pool_warning: str | None = None
    """The last reason its InferencePool was not applied, posted once as a Warning Event."""
    pool_conflict: bool = False
    """Its last apply found its InferencePool's name held by another object."""
    reconciled: bool = False
    """A full reconcile of this object ran its apply in this process. Until then a status-only
    refresh writes nothing: without the Deployment or the apply's outcome it would regress the
    status the previous process wrote (a restart's first pod events come before either)."""
    scaler: ScalerState | None = None
    """The autoscaler's window state (planning.scaling.ScalerState), newer than the one in status."""

    _offered: tuple[int, ObservedDeployment | None] | None = None
    _offered_lock: threading.Lock = field(default_factory=threading.Lock)

    def know_child(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.children[(str(obj.get("kind")), str(meta.get("name")))] = str(meta.get("uid") or "")

    def forget_child(self, kind: str, name: str) -> None:
        """The child was deleted: its name may be taken by someone else's object next."""
        self.children.pop((kind, name), None)

    def observe_deployment(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Keep the newest Deployment seen (call with the lock held)."""
        version = _resource_version(obj)
        if version >= self.deployment_version:
            self.deployment_version = version
            self.deployment = None if deleted else ObservedDeployment.from_object(obj)

    def offer_deployment(self, obj: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Hand over a Deployment from a watch event without waiting for the service's lock.

        Returns whether someone else changed it: a generation other than the one our last apply
        left. `take_offered` folds the newest offer in.
        """
        version = _resource_version(obj)
        observed = None if deleted else ObservedDeployment.from_object(obj)
        with self._offered_lock:
            if self._offered is None or version >= self._offered[0]:
                self._offered = (version, observed)
        applied = self.applied_generation
        return observed is not None and applied is not None and observed.generation != applied

    def take_offered(self) -> None:
        """Fold the newest offered Deployment into `deployment` (call with the lock held)."""
        with self._offered_lock:
            offered, self._offered = self._offered, None
        if offered is not None and offered[0] >= self.deployment_version:
            self.deployment_version, self.deployment = offered


class ServiceStates:
    """The state of every service this process works on, by key."""

    def __init__(self) -> None:
        self._states: dict[Key, ServiceState] = {}
        self._lock = threading.Lock()

    def get(self, key: Key, uid: str) -> ServiceState:
        """The state of the object `uid` named `key`: a new object under an old name starts afresh
        (its deletion may have gone unseen, and the old status must not pass for its own)."""
        with self._lock:
            state = self._states.get(key)
            if state is None or state.uid != uid:
                state = self._states[key] = ServiceState(uid=uid)
            return state

    def forget(self, key: Key) -> None:
        with self._lock:
            self._states.pop(key, None)

    def known(self) -> list[Key]:
        """The services this process keeps state for."""
        with self._lock:
            return list(self._states)


class RefusedNodes:
    """Nodes where the kube-scheduler could not bind a group member the plan put there.

    The plan reserves GPUs only against inferfleet's own placements; a pod the operator cannot see
    (another namespace when it watches only some, or one bound in the moment between plan and
    binding) can take them. New placements avoid such a node for a while instead of retrying it.
    """

    def __init__(self, hold_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold, self._clock = hold_seconds, clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def refuse(self, nodes: Iterable[str]) -> None:
        with self._lock:
            for node in nodes:
                self._until[node] = self._clock() + self._hold

    def seconds_to_next_release(self) -> float | None:
        """Seconds until the first hold ends; None when no node is held."""
        with self._lock:
            return max(0.0, min(self._until.values()) - self._clock()) if self._until else None

    def current(self) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            self._until = {n: t for n, t in self._until.items() if t > now}
            return frozenset(self._until)


class InventoryVersion:
    """Counts changes of the GPU inventory (capacity, readiness, cordons, taints, labels).

    A service waiting for GPUs is retried when the inventory changes; the retry picks services by
    their written status. A node event that arrives while a reconcile of that service runs finds
    it not yet marked as waiting, so the reconcile compares the version it planned against with
    the current one and runs again if they differ, instead of waiting for the next node event.
    """

    def __init__(self) -> None:
        self._value = 0
        self._seen: list[GpuNode] | None = None
        self._lock = threading.Lock()

    def update(self, nodes: Iterable[GpuNode]) -> bool:
        """Record the inventory a node event left; whether it differs from the one seen before."""
        inventory = sorted(nodes, key=lambda node: node.name)
        with self._lock:
            if inventory == self._seen:
                return False
            self._seen = inventory
            self._value += 1
            return True

    def current(self) -> int:
        with self._lock:
            return self._value
