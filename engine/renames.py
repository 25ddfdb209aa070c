"""Renames that keep a volume and its data: the `moved:` section of volplan.yml.

A volume's address is `volume.<name>`, so renaming it in its file looks like one volume going
and another coming, and the delete would destroy the data. A `moved:` entry
(`from: volume.data`, `to: volume.dataset`) declares that the recorded volume now has the new
address. Before the diff, `apply_moves` moves its record there, so the planner finds a recorded
volume whose name differs from its configuration: an update at the new address. `mark_renames`
then sets the change's `previous_address`, and the executor moves the state record and renames
the volume at its provider.

Without the entry, `suggest_moves` warns about each delete that looks like the other half of a
create and names the entry that avoids it.

Pure: the state and the refresh results are data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.actions import Action, Change, Plan, Record
from engine.units import format_size
from providers.base import VolumeFacts
from state.model import State

# Fields that must match for a delete and a create to look like one renamed volume.
_SAME_VOLUME_FIELDS = ("backend", "region", "size_gb", "tags")


@dataclass
class Moves:
    """The prior state and refresh results with every applicable `moved:` entry applied."""

    prior: State | None
    facts: Mapping[str, VolumeFacts | None]
    # New address -> old address, for each record that moved.
    renamed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def apply_moves(
    moved: list[tuple[str, str]],
    prior: State | None,
    facts: Mapping[str, VolumeFacts | None],
    defined: set[str],
) -> Moves:
    """Move the record of each `moved:` entry whose old address is recorded and new one is defined."""
    # Without entries nothing moves, so the state is not copied: a copy of a large state costs
    # more than the rest of this step.
    if prior is None or not moved:
        return Moves(prior, facts)
    state = prior.copy()
    result = Moves(state, dict(facts))
    for old, new in moved:
        reason = _skip_reason(state, old, new, defined)
        if reason is None:
            _move(state, result, old, new)
        elif reason:
            result.warnings.append(f"moved: from {old} to {new} is ignored: {reason}.")
    return result


def _skip_reason(state: State, old: str, new: str, defined: set[str]) -> str | None:
    """Explain why an entry does not apply; "" when there is nothing to do, None when it applies."""
    record = state.resources.get(old)
    if record is None:
        return ""
    if not old.startswith("volume.") or not new.startswith("volume.") or record.get("kind") != "volume":
        return "only volumes can be renamed with moved:"
    target = state.resources.get(new)
    if target is not None:
        return f"the state records both addresses, as different volumes ({record.get('id')} and {target.get('id')})"
    if new not in defined:
        return f"no loaded configuration defines {new}"
    if old in defined:
        return f"{record.get('file')} still defines {old}"
    return None


def _move(state: State, result: Moves, old: str, new: str) -> None:
    record = dict(state.resources.pop(old))
    record["address"] = new
    state.resources[new] = record
    facts = dict(result.facts)
    if old in facts:
        facts[new] = facts.pop(old)
    result.facts = facts
    result.renamed[new] = old


def mark_renames(plan: Plan, renamed: Mapping[str, str]) -> None:
    """Set `previous_address` on the change at each moved record's new address, and set its reason."""
    if not renamed:
        return
    for change in plan.changes:
        old = renamed.get(change.address)
        if old is None:
            continue
        change.previous_address = old
        volume_id = (change.before or {}).get("id")
        kept = f"moved: in volplan.yml renames {old} to {change.address}, keeping volume {volume_id} and its data"
        if change.action is Action.UPDATE:
            others = [part for part in change.reason.split("; ") if part != "name changed"]
            change.reason = "; ".join([kept, *others])
        else:
            change.reason = f"moved from {old} by moved: in volplan.yml; {change.reason}"


def suggest_moves(plan: Plan) -> list[str]:
    """Warn about each data-destroying delete that a create of the same volume under a new name explains."""
    actionable = plan.actionable
    creates = [change for change in actionable if _is_new_managed(change)]
    warnings = []
    for change in actionable:
        if change.action is not Action.DELETE or not change.destroys_data or change.before is None:
            continue
        match = _matching_create(change.before, creates)
        if match is None:
            continue
        creates.remove(match)
        warnings.append(_missing_move_warning(change.before, match.address))
    return warnings


def _is_new_managed(change: Change) -> bool:
    return change.action is Action.CREATE and change.before is None and not (change.after or {}).get("external")


def _matching_create(before: Record, creates: list[Change]) -> Change | None:
    candidates = [
        change
        for change in creates
        if all((change.after or {}).get(name) == before.get(name) for name in _SAME_VOLUME_FIELDS)
    ]
    same_file = [change for change in candidates if (change.after or {}).get("file") == before.get("file")]
    if same_file:
        return same_file[0]
    return candidates[0] if len(candidates) == 1 else None


def _missing_move_warning(before: Record, new: str) -> str:
    old = before["address"]
    size = f" ({format_size(before['size_gb'])})" if before.get("size_gb") else ""
    return (
        f"{old} will be deleted and {new} created empty, but they differ only in name. The delete destroys "
        f"volume {before.get('id')}{size} and its data. If you renamed the volume, add this entry to volplan.yml "
        f"and plan again, so that the volume is renamed and keeps its data:\n"
        f"  moved:\n"
        f"    - from: {old}\n"
        f"      to: {new}"
    )
