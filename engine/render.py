"""Render a plan for people (Terraform-style text) and for programs (JSON).

Renderers return text. Colour comes from a `paint` function that the CLI supplies, so this
module stays free of terminal concerns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from engine.actions import SUMMARY_ORDER, Action, Change, Plan, Record
from engine.costs import estimate_costs
from engine.drift import Drift
from engine.render_costs import cost_lines
from engine.render_drift import drift_section
from engine.units import format_duration, format_size

Paint = Callable[[str, str], str]
JSON_FORMAT_VERSION = "1"


def no_paint(text: str, role: str) -> str:
    return text


# The wording of each action for people: symbol, verb phrase, colour role.
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

# The wording of a node's or a mount's action for people, where it differs from a volume's.
_RUN_PHRASES: dict[tuple[str, Action], str] = {
    ("run", Action.CREATE): "will be placed",
    ("run", Action.DELETE): "will be removed from the state",
    ("node", Action.CREATE): "will be started",
    ("node", Action.DELETE): "will be stopped",
    ("node", Action.DEREGISTER): "will be forgotten (it was already stopped outside volplan)",
    ("mount", Action.CREATE): "will be attached",
    ("mount", Action.DELETE): "will be detached",
    ("mount", Action.REPLACE): "will be detached and attached again",
    ("mount", Action.REGISTER): "will be adopted (already attached; no attach call)",
    ("mount", Action.DEREGISTER): "will be forgotten (nothing to detach)",
}

# Progress words while a step runs and when it ends: (started, finished).
_PROGRESS: dict[tuple[str, Action], tuple[str, str]] = {
    ("node", Action.CREATE): ("Starting...", "Start complete"),
    ("node", Action.DELETE): ("Stopping...", "Stop complete"),
    ("mount", Action.CREATE): ("Attaching...", "Attach complete"),
    ("mount", Action.DELETE): ("Detaching...", "Detach complete"),
    ("mount", Action.REPLACE): ("Detaching and attaching...", "Attach complete"),
}

_SHOWN_FIELDS: dict[str, tuple[str, ...]] = {
    "volume": ("backend", "region", "availability_zone", "size_gb", "id", "tags", "auto_cleanup_duration", "file"),
    "run": ("type", "backend", "region", "stopped", "file"),
    "node": ("backend", "region", "availability_zone", "rank", "id"),
    "mount": ("path", "volume", "volume_id", "instance_path", "node_id", "skipped", "stop_duration"),
}
_LABELS: dict[str, dict[str, str]] = {
    "volume": {"size_gb": "size", "id": "volume_id"},
    "node": {"id": "node_id"},
}
# The field that is known only after apply, shown as such on a create.
_ID_FIELDS = {"volume": "id", "node": "id", "mount": "volume_id"}


def record_kind(change: Change) -> str:
    return str((change.after or change.before or {}).get("kind", "volume"))


def progress_words(change: Change, default: tuple[str, str]) -> tuple[str, str]:
    """Return the progress words for when `change` starts and when it finishes."""
    return _PROGRESS.get((record_kind(change), change.action), default)


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
    lines.extend(cost_lines(estimate_costs(plan)))
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
    kind = record_kind(change)
    record = change.after or change.before or {}
    phrase = _RUN_PHRASES.get((kind, change.action), phrase)
    if kind == "mount" and change.action is Action.CREATE and record.get("skipped"):
        phrase = "will be skipped (optional; recorded so that later plans show no drift)"
    if change.action is Action.UPDATE and change.previous_address is not None:
        phrase = "will be renamed in place"
    moved = f" (moved from {change.previous_address})" if change.previous_address is not None else ""
    header = f"  # {change.address}{moved} {phrase}"
    if change.action in (Action.UPDATE, Action.REPLACE) and change.reason:
        header += f": {change.reason}"
    lines = [paint(header, "bold")]
    label = record.get("path") if kind == "mount" else record.get("name", change.address)
    lines.append(f'  {paint(symbol, role)} {kind} "{label or change.address}" {{')
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
    kind = record_kind(change)
    fields = _SHOWN_FIELDS.get(kind, _SHOWN_FIELDS["volume"])
    labels = _LABELS.get(kind, {})
    names = [name for name in fields if _shown(before.get(name)) or _shown(after.get(name))]
    renamed = before.get("name") != after.get("name")
    if change.action in (Action.UPDATE, Action.REPLACE) and renamed and "name" not in names:
        names.insert(0, "name")
    id_field = _ID_FIELDS.get(kind)
    known_later = kind != "mount" or after.get("volume_address")
    if change.action is Action.CREATE and id_field and id_field not in names and known_later:
        names.insert(names.index("size_gb") + 1 if "size_gb" in names else len(names), id_field)
    width = max((len(labels.get(name, name)) for name in names), default=0)
    lines = []
    for name in names:
        label = labels.get(name, name).ljust(width)
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
    return value is not None and value != {} and value is not False


def _value(name: str, value: Any) -> str:
    if value is None:
        return '"off"' if name == "stop_duration" else "null"
    if name == "size_gb":
        return json.dumps(format_size(value))
    if name in ("auto_cleanup_duration", "stop_duration"):
        return json.dumps(format_duration(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value)


def applied_counts(changes: list[Change]) -> str:
    """Summarise finished changes by kind, such as "Volumes: 2 created. Nodes: 2 started."."""
    words = {
        "volume": {
            Action.CREATE: "created",
            Action.REGISTER: "registered",
            Action.UPDATE: "updated",
            Action.REPLACE: "replaced",
            Action.DELETE: "deleted",
            Action.DEREGISTER: "deregistered",
        },
        "node": {Action.CREATE: "started", Action.DELETE: "stopped"},
        "mount": {Action.CREATE: "attached", Action.DELETE: "detached", Action.REPLACE: "reattached"},
    }
    counts: dict[str, dict[str, int]] = {}
    for change in changes:
        kind = record_kind(change)
        if kind not in words:
            continue
        word = words[kind].get(change.action, "recorded")
        counts.setdefault(kind, {})
        counts[kind][word] = counts[kind].get(word, 0) + 1
    parts = []
    for kind in ("volume", "node", "mount"):
        if kind in counts:
            done = ", ".join(f"{count} {word}" for word, count in counts[kind].items())
            parts.append(f"{kind.capitalize()}s: {done}")
    return "; ".join(parts) or "State: updated"


def describe_record(record: Record) -> str:
    size = f", {format_size(record['size_gb'])}" if record.get("size_gb") else ""
    return f"{record['address']} ({record.get('id')}{size})"
