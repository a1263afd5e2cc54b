"""Loggers that carry an InferenceService's namespace and name, for threads outside kopf's handlers.

kopf's own per-object logger posts INFO lines as Kubernetes Events through its event loop, which
a worker thread cannot reach; this one only logs, and the JSON format still gets the `object`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

_objects = logging.getLogger("kopf.objects")


class ServiceLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = dict(self.extra or {}) | dict(kwargs.get("extra") or {})
        return msg, kwargs


def service_logger(body: Any) -> ServiceLogger:
    meta = body.get("metadata") or {}
    ref = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "namespace": meta.get("namespace"),
    }
    return ServiceLogger(_objects, {"k8s_ref": ref, "k8s_skip": True})
