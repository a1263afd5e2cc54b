"""A yes/no the API server gives that rarely changes, kept for a while instead of asked per reconcile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CachedAnswer:
    """The last answer of `ask`, asked again only once it is `ttl_seconds` old. A failed ask (it
    raised) keeps nothing, so the next call asks again."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._value: bool | None = None
        self._expires = 0.0

    def get(self, ask: Callable[[], bool]) -> bool:
        with self._lock:
            if self._value is not None and self._clock() < self._expires:
                return self._value
        value = ask()  # outside the lock: an API call; two workers asking at once is harmless
        with self._lock:
            self._value, self._expires = value, self._clock() + self._ttl
        return value

    def forget(self) -> None:
        """Ask again next time: a call found the answer wrong (the API was removed since, say)."""
        with self._lock:
            self._value = None
