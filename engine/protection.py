"""Protected addresses: the `protect:` section of volplan.yml.

A plan that would delete or replace a protected resource is rejected, whichever way it came
about: its file was removed, `destroy` or `delete` was run, a placement change or `--replace`
forced a new volume. Deregistering a protected registered volume is allowed, because the
volume and its data are kept. A rename keeps the protection of the old address, so that a
`moved:` entry cannot be used to slip past `protect:`.

Pure: the plan and the settings are data.
"""

from __future__ import annotations

from engine.actions import Action, Change, Plan
from engine.errors import PlanError
from engine.project import SETTINGS_FILE, Settings
from engine.units import format_size

_DESTRUCTIVE = (Action.DELETE, Action.REPLACE)


def check_protected(plan: Plan, settings: Settings) -> None:
    """Raise PlanError naming every protected address that the plan deletes or replaces."""
    protected = set(settings.protect)
    actionable = plan.actionable
    problems = []
    for change in actionable:
        entry = _protecting_entry(change, protected)
        if entry is not None and change.action in _DESTRUCTIVE:
            problems.append(_problem(change, entry, settings))
    for change in actionable:
        if change.previous_address in protected and change.address not in protected:
            plan.warnings.append(
                f"protect: lists {change.previous_address}, which becomes {change.address}: "
                f"change that entry of {SETTINGS_FILE} to {change.address} so that it stays protected."
            )
    if problems:
        raise PlanError("Protected volume", "\n".join(problems))


def _protecting_entry(change: Change, protected: set[str]) -> str | None:
    if change.address in protected:
        return change.address
    if change.previous_address in protected:
        return change.previous_address
    return None


def _problem(change: Change, entry: str, settings: Settings) -> str:
    line = settings.protect_lines.get(entry)
    where = f"{SETTINGS_FILE}:{line}" if line else SETTINGS_FILE
    verb = "delete" if change.action is Action.DELETE else "replace"
    before = change.before or {}
    size = f" ({format_size(before['size_gb'])})" if before.get("size_gb") else ""
    loss = " and its data" if change.action is Action.REPLACE and change.destroys_data else ""
    return (
        f"{where}: {entry} is protected, but this plan would {verb} volume {before.get('id')}{size}{loss}: "
        f"{change.reason}. To {verb} it on purpose, first remove '- {entry}' from protect: in {SETTINGS_FILE}; "
        f"otherwise undo what caused the {verb}."
    )
