"""The API server's audit log: which requests a user made, by verb and resource, in a time window.

The bench's policy logs every request at level Metadata without the RequestReceived stage, so a
request shows up once (ResponseComplete) or, for a watch, twice (ResponseStarted when it opens,
ResponseComplete when it ends): requests are counted once per auditID, at the time the API
server received them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class AuditRequest:
    audit_id: str
    user: str
    verb: str
    resource: str
    """"deployments", "inferenceservices/status", ... or the path of a non-resource request."""
    namespace: str
    name: str
    received: float
    """Seconds since the epoch (microsecond precision) when the API server received it."""
    code: int

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.verb} {self.resource} {where} ({self.code})".replace("  ", " ")


def parse_timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def parse_event(event: dict[str, Any]) -> tuple[str, AuditRequest] | None:
    """(stage, request) of one audit event; None for anything that is not an audit.k8s.io Event."""
    if event.get("kind") != "Event" or "auditID" not in event:
        return None
    ref = event.get("objectRef") or {}
    if ref.get("resource"):
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    else:
        resource = str(event.get("requestURI", "")).split("?", 1)[0]
    request = AuditRequest(
        audit_id=str(event["auditID"]),
        user=str((event.get("user") or {}).get("username", "")),
        verb=str(event.get("verb", "")),
        resource=resource,
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        received=parse_timestamp(str(event["requestReceivedTimestamp"])),
        code=int((event.get("responseStatus") or {}).get("code") or 0),
    )
    return str(event.get("stage", "")), request


class Deduplicator:
    """Passes each request once: a watch's ResponseStarted, and a ResponseComplete only when its
    request was not seen starting. Remembers only requests still open, so memory stays small."""

    def __init__(self) -> None:
        self._open: set[str] = set()

    def first_sight(self, stage: str, request: AuditRequest) -> bool:
        if stage == "ResponseStarted":
            if request.audit_id in self._open:
                return False
            self._open.add(request.audit_id)
            return True
        if request.audit_id in self._open:
            self._open.discard(request.audit_id)
            return False
        return True


def parse_lines(lines: Iterable[str], dedup: Deduplicator | None = None) -> Iterator[AuditRequest]:
    """Each request once, in log order; blank and torn lines are skipped."""
    dedup = dedup or Deduplicator()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            parsed = parse_event(json.loads(line))
        except (ValueError, KeyError):
            continue  # the last line may be half written while the API server runs
        if parsed is not None and dedup.first_sight(*parsed):
            yield parsed[1]


def select(
    requests: Iterable[AuditRequest], user: str, start: float = float("-inf"), end: float = float("inf")
) -> list[AuditRequest]:
    """`user`'s requests received in [start, end)."""
    return [r for r in requests if r.user == user and start <= r.received < end]


def count_by_verb(requests: Iterable[AuditRequest]) -> dict[str, int]:
    """Every verb of VERBS (0 when absent), then any other verb seen."""
    counts = Counter(r.verb for r in requests)
    return {verb: counts.get(verb, 0) for verb in VERBS} | {
        verb: n for verb, n in sorted(counts.items()) if verb not in VERBS
    }


def count_by_verb_and_resource(requests: Iterable[AuditRequest]) -> dict[str, int]:
    counts = Counter(f"{r.verb} {r.resource}" for r in requests)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def writes(requests: Iterable[AuditRequest]) -> list[AuditRequest]:
    return [r for r in requests if r.is_write]


class AuditLog:
    """Reads an audit log file as it grows, keeping the requests of one user (the operator's)."""

    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.user = user
        self.requests: list[AuditRequest] = []
        self.newest_received = float("-inf")
        """When the newest request of anyone in the log so far was received."""
        self._offset = 0
        self._dedup = Deduplicator()

    def refresh(self) -> list[AuditRequest]:
        """Parse the complete lines appended since the last call; return the user's new requests."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        new = []
        for request in parse_lines(complete.decode(errors="replace").splitlines(), self._dedup):
            self.newest_received = max(self.newest_received, request.received)
            if request.user == self.user:
                new.append(request)
        self.requests.extend(new)
        return new

    def last_write(self) -> float | None:
        """When the user's newest write so far was received."""
        return max((r.received for r in self.requests if r.is_write), default=None)
