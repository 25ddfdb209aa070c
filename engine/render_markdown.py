"""Render a plan as Markdown for a pull-request comment.

The comment reads top down in order of what a reviewer must see: the summary (a count per
action), the storage cost, warnings and notes, the destructive changes with the data they
destroy, the drift, and then one collapsible <details> section per change, destructive first.

GitHub rejects a comment longer than 65,536 characters, so the text stays under a budget
(60,000 by default). The summary and the cost are always kept. The lists after them are filled
in the order above until the next item would not fit. Everything left out is counted in a
closing note, which names the command that prints the full plan.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

from engine.actions import Action, Change, Plan
from engine.costs import CostEstimate, estimate_costs
from engine.drift import Drift
from engine.render import summary_line
from engine.render_costs import change_cost_text, cost_markdown
from engine.render_drift import describe_drift
from engine.units import format_duration, format_size

MAX_COMMENT_CHARS = 60_000
# Room kept for the closing note, which is written last.
_NOTE_RESERVE = 600

# Display order: what destroys or removes comes first.
DISPLAY_ORDER = (
    Action.DELETE,
    Action.REPLACE,
    Action.DEREGISTER,
    Action.UPDATE,
    Action.CREATE,
    Action.REGISTER,
)
_RANK = {action: rank for rank, action in enumerate(DISPLAY_ORDER)}

_FIELDS = ("name", "backend", "region", "availability_zone", "size_gb", "id", "tags", "auto_cleanup_duration", "file")
_LABELS = {"size_gb": "size", "id": "volume_id"}


class _Budget:
    """Collects the comment's parts while their total length stays under a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.used = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.used += len(text) + 1

    def fits(self, text: str) -> bool:
        return self.used + len(text) + 1 + _NOTE_RESERVE <= self.limit


def render_markdown(plan: Plan, drift: Sequence[Drift] = (), max_chars: int = MAX_COMMENT_CHARS) -> str:
    """Render `plan` as a pull-request comment of at most `max_chars` characters."""
    budget = _Budget(max_chars)
    changes = sorted(plan.actionable, key=lambda change: _RANK[change.action])
    costs = estimate_costs(plan)

    for part in _head(plan, changes, costs):
        budget.add(part)

    omitted: dict[str, int] = {}
    destructive = [change for change in changes if change.action in (Action.DELETE, Action.REPLACE)]
    sections = (
        ("warnings", "", [f"> **Warning:** {_inline(warning)}\n" for warning in plan.warnings]),
        ("notes", "", [f"> {_inline(note)}\n" for note in plan.notes]),
        ("destructive changes", "### Destructive changes", [_destructive_item(change) for change in destructive]),
        ("drift items", "### Changed outside volplan", [_drift_item(item) for item in drift]),
        ("change details", "### Changes", [_details(change, costs) for change in changes]),
    )
    for what, title, items in sections:
        shown = _add_section(budget, title, items)
        if shown < len(items):
            omitted[what] = len(items) - shown

    if omitted:
        budget.add(_cut_note(omitted, max_chars))
    return "\n".join(budget.parts).rstrip() + "\n"


def _head(plan: Plan, changes: list[Change], costs: CostEstimate) -> list[str]:
    parts = ["## volplan plan", "", f"**{summary_line(plan)}**", ""]
    if changes:
        parts.extend(_summary_table(changes))
        parts.append("")
    for line in cost_markdown(costs):
        parts.extend([line, ""])
    return parts


def _summary_table(changes: list[Change]) -> list[str]:
    counts = {action: 0 for action in DISPLAY_ORDER}
    for change in changes:
        counts[change.action] += 1
    rows = ["| Action | Count |", "|---|---:|"]
    for action in DISPLAY_ORDER:
        if counts[action]:
            rows.append(f"| {action.value} | {counts[action]} |")
    return rows


def _add_section(budget: _Budget, title: str, items: list[str]) -> int:
    """Add a section's title and as many of its items as fit; return how many were added."""
    if not items:
        return 0
    heading = f"{title}\n" if title else ""
    if not budget.fits(heading + items[0]):
        return 0
    if heading:
        budget.add(heading)
    shown = 0
    for item in items:
        if not budget.fits(item):
            break
        budget.add(item)
        shown += 1
    if heading:
        budget.add("")
    return shown


def _destructive_item(change: Change) -> str:
    before = change.before or {}
    volume = f"volume {before.get('id')}" if before.get("id") else "the volume"
    size = f", {format_size(before['size_gb'])}" if before.get("size_gb") else ""
    place = " ".join(str(before[name]) for name in ("backend", "region") if before.get(name))
    described = f"{volume} ({place}{size})" if place or size else volume
    if change.destroys_data:
        effect = f"destroys {described} and all its data"
    else:
        effect = f"removes {described} from the state; it was already deleted outside volplan"
    return f"- **{change.action.value}** `{change.address}`: {effect}. Reason: {_inline(change.reason)}."


def _drift_item(item: Drift) -> str:
    return f"- `{item.address}` ({item.kind.value}): {_inline(describe_drift(item))}"


def _details(change: Change, costs: CostEstimate) -> str:
    summary = f"<b>{change.action.value}</b> <code>{html.escape(change.address)}</code>"
    if change.destroys_data:
        summary += " (destroys data)"
    body = _diff_lines(change)
    fence = _fence("\n".join(body))
    lines = [
        f"<details><summary>{summary}</summary>",
        "",
        f"Reason: {_inline(change.reason)}",
        "",
    ]
    if change.previous_address:
        lines.extend([f"Moved from `{change.previous_address}`.", ""])
    cost = costs.for_address(change.address)
    if cost is not None:
        lines.extend([f"Storage cost: {change_cost_text(cost)}.", ""])
    lines.extend([f"{fence}diff", *body, fence, "", "</details>", ""])
    return "\n".join(lines)


def _diff_lines(change: Change) -> list[str]:
    before = change.before or {}
    after = change.after or {}
    lines = []
    for name in _FIELDS:
        label = _LABELS.get(name, name)
        old, new = before.get(name), after.get(name)
        if change.action in (Action.CREATE, Action.REGISTER):
            if _shown(new) or name == "id":
                lines.append(f"+ {label} = {_value(name, new) if new is not None else '(known after apply)'}")
        elif change.action in (Action.DELETE, Action.DEREGISTER):
            if _shown(old):
                lines.append(f"- {label} = {_value(name, old)}")
        elif old != new:
            lines.append(f"- {label} = {_value(name, old)}")
            lines.append(f"+ {label} = {_value(name, new) if new is not None else '(known after apply)'}")
        elif _shown(old) and name in ("name", "backend", "region"):
            lines.append(f"  {label} = {_value(name, old)}")
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
        return "{" + ", ".join(f"{key} = {json.dumps(item)}" for key, item in sorted(value.items())) + "}"
    return json.dumps(value)


def _fence(text: str) -> str:
    """Return a code fence longer than any run of backticks in `text`."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _inline(text: str) -> str:
    """Escape text for a Markdown paragraph: HTML tags and table pipes are shown as written."""
    return html.escape(text, quote=False).replace("|", "\\|")


def _cut_note(omitted: dict[str, int], max_chars: int) -> str:
    counted = ", ".join(f"{count} {what}" for what, count in omitted.items())
    return (
        f"> **Note:** this comment was cut to stay under {max_chars:,} characters: {counted} are not shown. "
        "The summary table counts every change. Run `volplan plan` for the full plan, or "
        "`volplan plan --json` for a file a program can read."
    )
