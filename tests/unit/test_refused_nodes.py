"""Nodes that refused a planned group member are avoided for a while, then offered again."""

from __future__ import annotations

from inferfleet.runtime.state import RefusedNodes


def test_a_refused_node_is_avoided_until_its_hold_ends() -> None:
    now = [0.0]
    refused = RefusedNodes(hold_seconds=300, clock=lambda: now[0])
    refused.refuse(["h100-a-1"])
    now[0] = 100.0
    refused.refuse(["h100-b-2"])
    assert refused.current() == {"h100-a-1", "h100-b-2"}
    now[0] = 350.0
    assert refused.current() == {"h100-b-2"}
    now[0] = 401.0
    assert refused.current() == frozenset()


def test_refusing_again_extends_the_hold() -> None:
    now = [0.0]
    refused = RefusedNodes(hold_seconds=300, clock=lambda: now[0])
    refused.refuse(["n"])
    now[0] = 250.0
    refused.refuse(["n"])
    now[0] = 500.0
    assert refused.current() == {"n"}


def test_the_next_release_is_when_the_first_hold_ends() -> None:
    now = [0.0]
    refused = RefusedNodes(hold_seconds=300, clock=lambda: now[0])
    assert refused.seconds_to_next_release() is None
    refused.refuse(["a"])
    now[0] = 100.0
    refused.refuse(["b"])
    assert refused.seconds_to_next_release() == 200.0
    now[0] = 301.0
    refused.current()  # drops the ended hold of "a"
    assert refused.seconds_to_next_release() == 99.0
