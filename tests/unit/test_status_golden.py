"""The status and child objects the planners write are the ones recorded before status became a
typed model and the builders took plan objects: same keys, values and JSON number types."""

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.status_golden_cases import GOLDEN, all_cases

RECORDED: dict[str, str] = json.loads(GOLDEN.read_text())
CASES = all_cases()


def test_every_recorded_case_is_still_computed() -> None:
    assert sorted(CASES) == sorted(RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_output_is_byte_identical_to_the_recording(name: str) -> None:
    compute: Callable[[], Any] = CASES[name]
    # Keys may come in another order (a JSON object has none); everything else, number types
    # included (3 and 3.0 are different bytes), must be the same.
    assert json.dumps(compute(), sort_keys=True) == json.dumps(json.loads(RECORDED[name]), sort_keys=True)
