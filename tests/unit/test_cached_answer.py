"""runtime/answer.py: a discovery answer kept for its TTL, and a failed ask not kept."""

from __future__ import annotations

import pytest

from inferfleet.runtime.answer import CachedAnswer

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_asked_once_per_ttl() -> None:
    clock, asked = Clock(), []
    answer = CachedAnswer(60.0, clock)

    def ask() -> bool:
        asked.append(clock.now)
        return len(asked) > 1  # the API appears between the first and the second ask

    assert answer.get(ask) is False
    clock.now += 59.0
    assert answer.get(ask) is False  # kept: no second discovery call
    clock.now += 1.0
    assert answer.get(ask) is True  # a minute on: asked again, and the new API is seen
    assert asked == [100.0, 160.0]


def test_a_failed_ask_keeps_nothing() -> None:
    clock = Clock()
    answer = CachedAnswer(60.0, clock)

    def fails() -> bool:
        raise RuntimeError("503")

    with pytest.raises(RuntimeError):
        answer.get(fails)
    assert answer.get(lambda: True) is True  # asked at once, not after the TTL


def test_a_forgotten_answer_is_asked_again_at_once() -> None:
    """A call found the answer wrong (the InferencePool API gone since it was discovered)."""
    clock, answers = Clock(), [True, False]
    answer = CachedAnswer(60.0, clock)
    assert answer.get(lambda: answers.pop(0)) is True
    answer.forget()
    assert answer.get(lambda: answers.pop(0)) is False  # within the minute: asked again
    assert answers == []
