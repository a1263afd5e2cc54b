"""Wait for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(TimeoutError):
    pass


class GiveUpError(RuntimeError):
    """Raised by a probe when waiting longer cannot help (e.g. the process it waits for died)."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Call `probe` until it returns a truthy value and return that value.

    Exceptions from the probe count as "not yet" (the last one is chained to the timeout),
    except GiveUpError, which ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except GiveUpError:
            raise
        except Exception as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what}") from last_error
        time.sleep(interval)
