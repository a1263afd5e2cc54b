"""Operator-wide settings and health."""

from __future__ import annotations

from typing import Any

import kopf

import inferfleet
from inferfleet.kube.connection import ClientLimits, connect
from inferfleet.metrics.operator import API_THROTTLED

FINALIZER = "inferfleet.io/finalizer"


@kopf.on.startup()
def on_startup_configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="inferfleet.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="inferfleet.io")
    settings.posting.level = 20  # INFO and above become Kubernetes Events, not debug chatter
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    # Threads for the synchronous handlers: with the client's own limit, this bounds API concurrency.
    settings.execution.max_workers = int(memo.get("workers") or 8)
    # A standby takes over once the active instance's peering record is this old (kill -9 leaves it).
    settings.peering.lifetime = int(memo.get("peering_lifetime") or 15)


@kopf.on.probe(id="version")
def on_probe_version(**_: Any) -> str:
    return inferfleet.__version__


@kopf.on.startup()
def on_startup_connect(memo: kopf.Memo, **_: Any) -> None:
    memo.api = connect(memo.get("client_limits") or ClientLimits(), on_throttled=API_THROTTLED.inc)
