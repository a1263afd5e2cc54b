import itertools

import pytest

from inferfleet.localcluster.waiting import GiveUpError, WaitTimeoutError, wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_for(lambda: next(calls) >= 2 and "done", timeout=5, what="three calls", interval=0) == "done"


def test_wait_for_times_out_with_the_last_error_chained() -> None:
    def probe() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeoutError, match="waiting for the server") as info:
        wait_for(probe, timeout=0.05, what="the server", interval=0.01)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_a_probe_can_give_up_at_once() -> None:
    calls = itertools.count()

    def probe() -> bool:
        next(calls)
        raise GiveUpError("the server died")

    with pytest.raises(GiveUpError, match="the server died"):
        wait_for(probe, timeout=30, what="the server", interval=0)
    assert next(calls) == 1
