"""Three-way merge of state files, resource by resource, for git's merge driver.

Each address is decided on its own, from its records in the common ancestor (BASE), in our
branch (OURS) and in their branch (THEIRS). A missing record counts as a value too:

- OURS and THEIRS agree: that record (or its absence) is kept;
- only one side differs from BASE: that side's record (or deletion) is taken;
- both sides differ from BASE and from each other: a conflict.

The merged serial is the higher of the two serials plus one, so it is newer than both. States
of different lineages are never merged. A BASE of another lineage, or an empty BASE (git
passes an empty file when both branches added the state), has no common records, so every
address that OURS and THEIRS record differently is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import StateError
from state.model import Record, State


@dataclass(frozen=True)
class Conflict:
    """One address that both sides changed differently; None means that side has no record."""

    address: str
    base: Record | None
    ours: Record | None
    theirs: Record | None


class MergeConflict(StateError):
    """Both sides changed the same resources; nothing was merged."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        addresses = ", ".join(conflict.address for conflict in conflicts)
        super().__init__(
            "State merge conflict",
            f"both branches changed {addresses}. Nothing was written: resolve the conflict by keeping one "
            "version of the state file, then run volplan plan to see what remains to change.",
        )
        self.conflicts = conflicts


def merge_states(base: State | None, ours: State, theirs: State) -> State:
    """Merge OURS and THEIRS from their common ancestor BASE; raise MergeConflict or StateError."""
    if ours.lineage != theirs.lineage:
        raise StateError(
            "Cannot merge states of different lineages",
            f"ours has lineage {ours.lineage} and theirs {theirs.lineage}: they describe different sets of "
            "volumes. Keep one state file and import the other's volumes with volplan apply.",
        )
    base_records = base.resources if base is not None and base.lineage == ours.lineage else {}

    merged: dict[str, Record] = {}
    conflicts: list[Conflict] = []
    for address in sorted(set(base_records) | set(ours.resources) | set(theirs.resources)):
        before = base_records.get(address)
        mine = ours.resources.get(address)
        other = theirs.resources.get(address)
        if mine == other or other == before:
            chosen = mine
        elif mine == before:
            chosen = other
        else:
            conflicts.append(Conflict(address, before, mine, other))
            continue
        if chosen is not None:
            merged[address] = chosen

    if conflicts:
        raise MergeConflict(conflicts)
    return State(ours.lineage, max(ours.serial, theirs.serial) + 1, merged)
