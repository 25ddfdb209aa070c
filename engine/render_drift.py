"""Render drift for people (one line per difference) and for programs (JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from engine.drift import Drift, DriftKind
from engine.units import format_size

Paint = Callable[[str, str], str]
DRIFT_FORMAT_VERSION = "1"

# Symbol and colour role of each kind, as the plan shows the change that would follow.
_STYLE: dict[DriftKind, tuple[str, str]] = {
    DriftKind.DELETED: ("-", "delete"),
    DriftKind.RESIZED: ("~", "update"),
    DriftKind.RETAGGED: ("~", "update"),
    DriftKind.DETACHED: ("-", "delete"),
    DriftKind.ATTACHED_ELSEWHERE: ("!", "warning"),
    DriftKind.NODE_GONE: ("-", "delete"),
}


def describe_drift(item: Drift) -> str:
    """Describe one difference in one sentence that names the resource id."""
    what = item.resource_id or "the resource"
    if item.kind is DriftKind.DELETED:
        return f"volume {what} was deleted outside volplan"
    if item.kind is DriftKind.RESIZED:
        return f"volume {what} was resized outside volplan: {format_size(item.expected)} -> {format_size(item.actual)}"
    if item.kind is DriftKind.RETAGGED:
        return f"tags of volume {what} changed outside volplan: {_tags(item.expected)} -> {_tags(item.actual)}"
    if item.kind is DriftKind.DETACHED:
        return f"volume {what} was detached from instance {item.expected} outside volplan"
    if item.kind is DriftKind.ATTACHED_ELSEWHERE:
        return f"volume {what} is attached to {', '.join(item.actual)}, which no mount in the state expects"
    return f"instance {what} of this node no longer exists"


def drift_lines(drift: Sequence[Drift], paint: Paint) -> list[str]:
    lines = []
    for item in drift:
        symbol, role = _STYLE[item.kind]
        lines.append(f"  {paint(symbol, role)} {item.address}: {describe_drift(item)}")
    return lines


def drift_section(drift: Sequence[Drift], paint: Paint) -> list[str]:
    """Build the plan's drift section, shown before the changes. Without drift it is empty."""
    if not drift:
        return []
    header = paint("Objects have changed outside volplan", "bold")
    return [
        f"{header} since the state was last written:",
        "",
        *drift_lines(drift, paint),
        "",
    ]


def render_drift_json(drift: Sequence[Drift], checked: int) -> str:
    counts: dict[str, int] = {kind.value: 0 for kind in DriftKind}
    for item in drift:
        counts[item.kind.value] += 1
    document: dict[str, Any] = {
        "format_version": DRIFT_FORMAT_VERSION,
        "drift": [item.to_json() for item in drift],
        "summary": {
            "checked": checked,
            "drifted": len({item.address for item in drift}),
            **counts,
        },
    }
    return json.dumps(document, indent=2)


def _tags(tags: dict[str, str]) -> str:
    if not tags:
        return "{}"
    return "{" + ", ".join(f"{key} = {json.dumps(value)}" for key, value in sorted(tags.items())) + "}"
