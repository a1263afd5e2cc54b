"""Prefix-affinity routing (planning/prefix_routing.py, gateway/prefix_index.py): tables."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.gateway.prefix_index import PrefixIndex, PrefixMatch
from inferfleet.planning.prefix_routing import (
    MAX_PREFIX_BLOCKS,
    PREFIX_BLOCK_WORDS,
    LoadBound,
    pick_endpoint_by_match,
    pick_endpoint_by_prefix,
    prefix_blocks,
)

pytestmark = pytest.mark.unit


def words(tag: str, blocks: float) -> str:
    return " ".join(f"{tag}{i}" for i in range(int(blocks * PREFIX_BLOCK_WORDS)))


def completion(*parts: str) -> dict[str, Any]:
    return {"prompt": " ".join(parts)}


@pytest.mark.parametrize(
    ("body", "chat", "count"),
    [
        pytest.param(completion(words("a", 0.9)), False, 0, id="shorter-than-a-block"),
        pytest.param(completion(words("a", 2.5)), False, 2, id="whole-blocks-only"),
        pytest.param(completion(words("a", MAX_PREFIX_BLOCKS + 3)), False, MAX_PREFIX_BLOCKS, id="capped"),
        pytest.param({"prompt": list(range(2 * PREFIX_BLOCK_WORDS))}, False, 2, id="token-ids"),
        pytest.param({"prompt": [list(range(20)), list(range(20))]}, False, 2, id="lists-of-token-ids"),
        pytest.param({"prompt": [True] * 40}, False, 0, id="booleans-are-not-token-ids"),
        pytest.param({"prompt": [[1, "a"]] * 40}, False, 0, id="mixed-list-not-read"),
        pytest.param({"messages": "not a list"}, True, 0, id="malformed-chat"),
    ],
)
def test_prompts_become_whole_blocks(body: dict[str, Any], chat: bool, count: int) -> None:
    assert len(prefix_blocks(body, chat)) == count


def test_token_ids_are_read_as_the_words_they_would_be_in_text() -> None:
    ids = list(range(100, 100 + 3 * PREFIX_BLOCK_WORDS))
    as_text = completion(" ".join(str(i) for i in ids))
    assert prefix_blocks({"prompt": ids}, False) == prefix_blocks(as_text, False)
    assert prefix_blocks({"prompt": [ids[:10], ids[10:]]}, False) == prefix_blocks(as_text, False)


def test_a_block_hash_stands_for_everything_before_it() -> None:
    system = words("sys", 2)
    first = prefix_blocks(completion(system, words("x", 2)), False)
    second = prefix_blocks(completion(system, words("y", 2)), False)
    assert first[:2] == second[:2]  # the shared system prompt
    assert first[2] != second[2]
    # The same block text after a different beginning is a different hash.
    assert prefix_blocks(completion(words("other", 1), words("x", 1)), False)[1] != first[2]


def test_chat_turns_share_the_blocks_of_earlier_turns() -> None:
    system = {"role": "system", "content": words("sys", 2)}
    turn = [system, {"role": "user", "content": words("q", 2)}]
    later = [
        *turn,
        {"role": "assistant", "content": words("a", 1)},
        {"role": "user", "content": words("r", 1)},
    ]
    one, two = prefix_blocks({"messages": turn}, True), prefix_blocks({"messages": later}, True)
    assert two[: len(one) - 1] == one[:-1]  # the last block of a turn may straddle the next


E = [f"198.18.0.{i}:8000" for i in range(1, 5)]
IDLE = dict.fromkeys(E, 0)
BLOCKS = (11, 12, 13, 14)
BOUND = LoadBound(0.25, slack=0)


@pytest.mark.parametrize(
    ("in_flight", "held", "expected"),
    [
        pytest.param(IDLE, {E[2]: 3, E[1]: 1}, E[2], id="longest-match"),
        pytest.param(IDLE, {E[2]: 2, E[1]: 2}, E[1], id="ties-to-the-first-of-least-load"),
        pytest.param({**IDLE, E[1]: 1}, {E[2]: 2, E[1]: 2}, E[2], id="ties-to-the-least-loaded"),
        pytest.param({**IDLE, E[2]: 3}, {E[2]: 3, E[1]: 1}, E[1], id="holder-above-the-bound-spills"),
    ],
)
def test_the_longest_match_within_the_load_bound_wins(
    in_flight: dict[str, int], held: dict[str, int], expected: str
) -> None:
    assert pick_endpoint_by_match(in_flight, 8, (), BLOCKS, held, 0, BOUND) == expected


@pytest.mark.parametrize(
    ("in_flight", "bound", "slots", "cap"),
    [
        # The mean counts this request: (3 + 1) / 4 = 1; (60 + 1) / 4 = 15.25.
        pytest.param({**IDLE, E[0]: 3}, LoadBound(1.0, slack=0), 64, 2, id="relative-alone-few-in-flight"),
        pytest.param({**IDLE, E[0]: 3}, LoadBound(1.0, slack=4), 64, 5, id="slack-above-a-small-mean"),
        pytest.param(dict.fromkeys(E, 15), LoadBound(1.0, slack=4), 64, 31, id="relative-above-a-large-mean"),
        pytest.param(dict.fromkeys(E, 15), LoadBound(0.25, slack=8), 64, 24, id="slack-beats-tight-relative"),
        pytest.param({**IDLE, E[0]: 3}, LoadBound(1.0, slack=64), 8, 8, id="never-above-the-slots"),
    ],
)
def test_the_cap_is_the_larger_of_the_relative_bound_and_the_slack_within_the_slots(
    in_flight: dict[str, int], bound: LoadBound, slots: int, cap: int
) -> None:
    assert bound.cap(in_flight, E, slots) == cap


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        pytest.param(LoadBound(1.0, slack=0), E[1], id="without-slack-the-holder-at-3-spills"),
        pytest.param(LoadBound(1.0, slack=2), E[1], id="slack-2-cap-3-still-spills"),
        pytest.param(LoadBound(1.0, slack=3), E[0], id="slack-3-cap-4-keeps-it"),
    ],
)
def test_a_holder_a_few_requests_above_a_small_mean_keeps_its_prefix_with_slack(
    bound: LoadBound, expected: str
) -> None:
    in_flight = {**IDLE, E[0]: 3}
    assert pick_endpoint_by_match(in_flight, 8, (), BLOCKS, {E[0]: 3, E[1]: 1}, 0, bound) == expected


def test_a_shared_run_teaches_nothing_the_next_block_picks_the_ring() -> None:
    def pick(blocks: tuple[int, ...], held: dict[str, int], shared: int) -> str | None:
        return pick_endpoint_by_match(IDLE, 8, (), blocks, held, shared, BOUND)

    # A system prompt of two blocks where conversations part, so far sent only to E[0]; each
    # conversation is longer than it.
    one = pick((1, 2, 30, 40, 50), {E[0]: 2}, 2)
    assert one == pick_endpoint_by_prefix(IDLE, 8, (), 30, BOUND)  # keyed on the first unshared block
    assert pick((1, 2, 30, 40, 50, 60), {one: 5}, 2) == one  # its next turn, wherever the ring put it
    spread = {pick((1, 2, k, k + 1000, k + 2000), {E[0]: 2}, 2) for k in range(100, 200)}
    assert spread == set(E)
    # A run every endpoint holds is shared too, even where no prompt parted from it yet.
    assert pick((1, 2, 30, 40, 50), dict.fromkeys(E, 2), 0) == one
    assert pick((1, 2), dict.fromkeys(E, 2), 2) is None  # every endpoint holds it whole: least load
    assert pick((), {}, 0) is None


def test_a_shared_run_that_is_most_of_the_prompt_stays_where_it_is_held() -> None:
    """A long document many short questions share: re-reading it costs more than the spread saves."""
    document = (1, 2, 3, 4)
    asked = {pick_endpoint_by_match(IDLE, 8, (), (*document, k), {E[1]: 4}, 4, BOUND) for k in range(100)}
    assert asked == {E[1]}
    # A whole prompt sent before (and that other prompts went on from) goes where it is held.
    assert pick_endpoint_by_match(IDLE, 8, (), document, {E[2]: 4}, 4, BOUND) == E[2]
    held_by_two = pick_endpoint_by_match(IDLE, 8, (), document, {E[2]: 4, E[0]: 4}, 4, BOUND)
    assert held_by_two == pick_endpoint_by_prefix(IDLE, 8, (E[1], E[3]), document[-1], BOUND)
    # Held by two: keyed on the ring among those two.
    both = {
        pick_endpoint_by_match(IDLE, 8, (), (*document, k), {E[1]: 4, E[3]: 4}, 4, BOUND) for k in range(100)
    }
    assert both == {E[1], E[3]}
    # The holder over the load bound: the question goes on the ring over every endpoint.
    busy = {**IDLE, E[1]: 4}
    assert pick_endpoint_by_match(busy, 8, (), (*document, 7), {E[1]: 4}, 4, BOUND) != E[1]


def test_excluded_endpoints_are_not_picked_even_with_the_longest_match() -> None:
    assert pick_endpoint_by_match(IDLE, 8, (E[2],), BLOCKS, {E[2]: 4, E[0]: 1}, 0, BOUND) == E[0]


def test_the_index_knows_the_leading_run_each_endpoint_got_and_where_prompts_part() -> None:
    index = PrefixIndex()
    index.record((1, 2, 3), E[0])
    assert index.match((1, 2, 3, 4), E) == PrefixMatch({E[0]: 3, E[1]: 0, E[2]: 0, E[3]: 0}, 0)
    index.record((1, 2, 9), E[1])
    assert index.match((1, 2, 3, 4), E) == PrefixMatch({E[0]: 3, E[1]: 2, E[2]: 0, E[3]: 0}, 2)
    assert index.match((1, 2), E).shared == 2  # others went on from where this prompt ends
    assert index.match((5, 2, 3), E) == PrefixMatch(dict.fromkeys(E, 0), 0)  # runs start at block 0
    assert index.match((), E) == PrefixMatch(dict.fromkeys(E, 0), 0)


def test_the_index_forgets_the_least_recently_used_blocks_first() -> None:
    index = PrefixIndex(capacity=4)
    index.record((1, 2), E[0])
    index.record((3, 4), E[1])
    index.record((1,), E[0])  # used again: now the most recent
    index.record((5,), E[2])
    assert len(index) == 4
    assert index.match((1, 2), E).held[E[0]] == 1  # block 2, the least recently used, went
    assert index.match((3, 4), E).held[E[1]] == 2
    assert index.match((5,), E).held[E[2]] == 1


ENDPOINTS = {f"198.18.0.{i}:8000": 0 for i in range(1, 5)}


def test_one_prefix_one_endpoint_and_keys_spread_over_all() -> None:
    picks = {pick_endpoint_by_prefix(ENDPOINTS, 8, (), f"prefix {k}", BOUND) for k in range(200)}
    assert picks == set(ENDPOINTS)  # 200 prefixes use every endpoint
    same = {pick_endpoint_by_prefix(ENDPOINTS, 8, (), "one prefix", BOUND) for _ in range(10)}
    assert len(same) == 1


def test_an_endpoint_above_the_load_bound_is_skipped_and_full_ones_too() -> None:
    home = pick_endpoint_by_prefix(ENDPOINTS, 8, (), "hot", BOUND)
    assert home is not None
    # 3 on its home, 0 elsewhere: mean after this request is 1, the cap ceil(1.25) = 2 -> moved on
    loaded = {**ENDPOINTS, home: 3}
    moved = pick_endpoint_by_prefix(loaded, 8, (), "hot", BOUND)
    assert moved not in (None, home)
    all_full = dict.fromkeys(ENDPOINTS, 8)
    assert pick_endpoint_by_prefix(all_full, 8, (), "hot", LoadBound(10, slack=0)) is None


def test_adding_an_endpoint_moves_about_its_share_of_prefixes() -> None:
    keys = [f"conversation {k}" for k in range(400)]
    before = {k: pick_endpoint_by_prefix(ENDPOINTS, 8, (), k, BOUND) for k in keys}
    grown = {**ENDPOINTS, "198.18.0.9:8000": 0}
    after = {k: pick_endpoint_by_prefix(grown, 8, (), k, BOUND) for k in keys}
    moved = sum(before[k] != after[k] for k in keys)
    assert moved < 400 * 0.35  # about 1/5 move (to the new one); modulo hashing would move 4/5
    assert all(after[k] == "198.18.0.9:8000" for k in keys if before[k] != after[k])
