"""Fuzz every hostile-input target with a small budget; scripts/fuzz.py runs the large one.

The rules each example must keep are in tests/hostile_inputs.py: the project's own error or
success, exit code 0, 1 or 2, no traceback, issues located at file and line, and the state
file unchanged by every failing command.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile_inputs import Sandbox, Tally, run_examples, sandbox, targets

# Examples per target in the default test run; about 30 seconds in all on 2 cores.
BUDGET = {"yaml": 150, "mounts": 300, "sizes": 300, "templates": 300, "state": 120, "cli": 150}


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with sandbox() as created:
        yield created


@pytest.mark.parametrize("target", sorted(BUDGET))
def test_fuzz_target(box: Sandbox, target: str) -> None:
    strategy, check = targets(box)[target]
    tally = Tally()

    run_examples(strategy, check, BUDGET[target], tally)()

    assert tally.examples > 0
