"""Calls to the API server whose failure is reported with what failed and the server's words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException

from inferfleet.kube.apply import api_error_message

T = TypeVar("T")


class ApplyError(Exception):
    """A call to the API server failed; the message says what and what the server said.

    The work queue retries the key with backoff; the message becomes the ApplyFailed condition."""


def call(what: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except ApiException as e:
        # The API server's own message says what to fix; a status code alone does not.
        verb = "was refused" if e.status in (400, 403, 422) else "failed"
        raise ApplyError(f"{what} {verb} ({e.status}): {api_error_message(e)}") from e
