"""Whether one state may replace another: the rules `state pull` and `state push` apply.

A state may only replace a state of the same lineage (the same project's history) whose
serial is not newer. An equal serial is accepted only when the content is the same, in which
case there is nothing to copy.
"""

from __future__ import annotations

from engine.errors import StateError
from state.model import State


def check_replacement(current: State | None, incoming: State, *, target: str, source: str) -> bool:
    """Check that `incoming` (read from `source`) may replace `current` at `target`.

    Returns False when `target` already contains the same state, True when it should be
    replaced. Raises StateError naming both lineages or serials otherwise.
    """
    if current is None:
        return True
    force_hint = f"If {source} is the state you mean to keep, add --force to replace {target} anyway."
    if current.lineage != incoming.lineage:
        raise StateError(
            "Different lineage",
            f"{target} has lineage {current.lineage}, but {source} has lineage {incoming.lineage}: they are "
            f"the states of different projects, and nothing was replaced. Check --state and the file. {force_hint}",
        )
    if incoming.serial < current.serial:
        raise StateError(
            "Older serial",
            f"{target} has serial {current.serial}, newer than serial {incoming.serial} in {source}; replacing it "
            f"would lose the changes recorded since. Pull the newer state first. {force_hint}",
        )
    if incoming.serial == current.serial:
        if incoming.same_content(current):
            return False
        raise StateError(
            "Same serial, different content",
            f"{target} and {source} both have serial {current.serial} but different resources, so one of them "
            f"was changed without volplan. Compare the two. {force_hint}",
        )
    return True
