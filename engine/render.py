"""Render a plan for people (Terraform-style text) and for programs (JSON).

Renderers return text. Colour comes from a `paint` function that the CLI supplies, so this
module stays free of terminal concerns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from engine.actions import SUMMARY_ORDER, Action, Change, Plan, Record
from engine.drift import Drift
from engine.render_drift import drift_section
from engine.units import format_duration, format_size

Paint = Callable[[str, str], str]
JSON_FORMAT_VERSION = "1"


def no_paint(text: str, role: str) -> str:
    return text


# How each action reads for people: symbol, verb phrase, colour role.
_WORDS: dict[Action, tuple[str, str, str]] = {
    Action.CREATE: ("+", "will be created", "create"),
    Action.REGISTER: (
        "register",
        "will be registered (an existing volume; volplan will not delete its data)",
        "create",
    ),
    Action.UPDATE: ("~", "will be updated in place", "update"),
    Action.REPLACE: ("-/+", "must be replaced", "replace"),
    Action.DELETE: ("-", "will be deleted", "delete"),
    Action.DEREGISTER: (
        "deregister",
        "will be deregistered (volplan forgets it; the volume and its data are kept)",
        "delete",
    ),
}

_SHOWN_FIELDS = ("backend", "region", "availability_zone", "size_gb", "id", "tags", "auto_cleanup_duration", "file")
_LABELS = {"size_gb": "size", "id": "volume_id"}


def render_json(plan: Plan) -> str:
    summary: dict[str, int] = plan.summary_json()
    summary["no-op"] = sum(1 for change in plan.changes if change.action is Action.NO_OP)
    document = {
        "format_version": JSON_FORMAT_VERSION,
        "changes": [change.to_json() for change in plan.changes],
        "summary": summary,
    }
    return json.dumps(document, indent=2, sort_keys=False)


def render_human(plan: Plan, paint: Paint = no_paint, drift: Sequence[Drift] = ()) -> str:
    lines: list[str] = []
    lines.extend(plan.notes[:1])
    if plan.notes[:1]:
        lines.append("")
    lines.extend(drift_section(drift, paint))

    actionable = plan.actionable
    if actionable:
        lines.append("volplan will perform the following actions:")
        lines.append("")
        for change in actionable:
            lines.extend(_render_change(change, paint))
            lines.append("")

    for note in plan.notes[1:]:
        lines.append(paint("Note: ", "bold") + note)
    for warning in plan.warnings:
        lines.append(paint("Warning: ", "warning") + warning)
    if plan.notes[1:] or plan.warnings:
        lines.append("")

    lines.append(summary_line(plan, paint))
    return "\n".join(lines)


def summary_line(plan: Plan, paint: Paint = no_paint) -> str:
    counts = plan.counts()
    parts = [f"{counts[action]} to {action.value}" for action in SUMMARY_ORDER if counts[action]]
    if not parts:
        return paint("No changes.", "bold") + " Your volumes match the configuration."
    return paint("Plan:", "bold") + " " + ", ".join(parts) + "."


def destroyed_data(plan: Plan) -> list[Change]:
    return [change for change in plan.actionable if change.destroys_data]


def _render_change(change: Change, paint: Paint) -> list[str]:
    symbol, phrase, role = _WORDS[change.action]
    record = change.after or change.before or {}
    if change.action is Action.UPDATE and change.previous_address is not None:
        phrase = "will be renamed in place"
    moved = f" (moved from {change.previous_address})" if change.previous_address is not None else ""
    header = f"  # {change.address}{moved} {phrase}"
    if change.action in (Action.UPDATE, Action.REPLACE) and change.reason:
        header += f": {change.reason}"
    lines = [paint(header, "bold")]
    lines.append(f'  {paint(symbol, role)} volume "{record.get("name", change.address)}" {{')
    lines.extend(_render_fields(change, paint))
    lines.append("    }")
    if change.action not in (Action.UPDATE, Action.REPLACE):
        lines.append(f"    reason: {change.reason}")
    if change.destroys_data:
        before = change.before or {}
        size = f" ({format_size(before['size_gb'])})" if before.get("size_gb") else ""
        lines.append("    " + paint(f"volume {before.get('id')}{size} and all its data will be destroyed", "delete"))
    return lines


def _render_fields(change: Change, paint: Paint) -> list[str]:
    before = change.before or {}
    after = change.after or {}
    names = [name for name in _SHOWN_FIELDS if _shown(before.get(name)) or _shown(after.get(name))]
    if change.action in (Action.UPDATE, Action.REPLACE) and before.get("name") != after.get("name"):
        names.insert(0, "name")
    if change.action is Action.CREATE and "id" not in names:
        names.insert(names.index("size_gb") + 1 if "size_gb" in names else len(names), "id")
    width = max((len(_LABELS.get(name, name)) for name in names), default=0)
    lines = []
    for name in names:
        label = _LABELS.get(name, name).ljust(width)
        old, new = before.get(name), after.get(name)
        if change.action in (Action.CREATE, Action.REGISTER):
            shown = _value(name, new) if new is not None else "(known after apply)"
            lines.append(f"      {paint('+', 'create')} {label} = {shown}")
        elif change.action in (Action.DELETE, Action.DEREGISTER):
            lines.append(f"      {paint('-', 'delete')} {label} = {_value(name, old)}")
        elif old != new:
            marker = paint("~", "update")
            shown_new = _value(name, new) if new is not None else "(known after apply)"
            lines.append(f"      {marker} {label} = {_value(name, old)} -> {shown_new}")
    return lines


def _shown(value: Any) -> bool:
    return value is not None and value != {}


def _value(name: str, value: Any) -> str:
    if value is None:
        return "null"
    if name == "size_gb":
        return json.dumps(format_size(value))
    if name == "auto_cleanup_duration":
        return json.dumps(format_duration(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value)


def describe_record(record: Record) -> str:
    size = f", {format_size(record['size_gb'])}" if record.get("size_gb") else ""
    return f"{record['address']} ({record.get('id')}{size})"
