"""The approval questions: Terraform's `Only 'yes'` prompt and dstack's `[y/n]` questions."""

from __future__ import annotations

import click

from engine.actions import SUMMARY_ORDER, Action, Change, Plan
from engine.cli.common import Output
from engine.render import destroyed_data, record_kind
from engine.units import format_size

_VERBS = {
    Action.CREATE: "create",
    Action.REGISTER: "register",
    Action.UPDATE: "update",
    Action.REPLACE: "replace",
    Action.DELETE: "delete",
    Action.DEREGISTER: "deregister",
}


def ask(plan: Plan, output: Output, dstack_style: bool, command: str) -> bool:
    """Ask for approval of `plan`, after listing the volumes whose data it destroys."""
    doomed = destroyed_data(plan)
    if doomed:
        output.echo(output.paint("These volumes and all their data will be destroyed:", "delete"))
        for change in doomed:
            before = change.before or {}
            size = f", {format_size(before['size_gb'])}" if before.get("size_gb") else ""
            output.echo(f"  - {change.address} ({before.get('id')}{size})")
        output.echo()

    if dstack_style:
        return ask_yes_no(dstack_question(plan))

    output.echo(
        f"Do you want to perform these actions?\n  volplan will {command} as described above.\n  Only 'yes' will be accepted to approve.\n"
    )
    answer: str = click.prompt("  Enter a value", default="", show_default=False)
    return answer.strip() == "yes"


def ask_yes_no(question: str) -> bool:
    """Ask dstack's way: `question [y/n]: `, repeated until the answer is y or n."""
    return click.confirm(question, default=None, show_default=False, prompt_suffix=" [y/n]: ")


def dstack_question(plan: Plan) -> str:
    """dstack's question for one change, or one summary question when several resources change."""
    changes = plan.actionable
    if len(changes) > 1:
        return summary_question(plan)

    change = changes[0]
    kind = record_kind(change)
    if kind != "volume":
        return f"{_VERBS[change.action].capitalize()} {kind} {change.address}?"
    name = volume_name(change)
    questions = {
        Action.CREATE: f"Volume {name} does not exist yet. Create the volume?",
        Action.REGISTER: f"Volume {name} is not registered yet. Register the volume?",
        Action.UPDATE: f"Volume {name} changes: {change.reason}. Update the volume?",
        Action.REPLACE: f"Volume {name} must be replaced: {change.reason}. Replace the volume?",
        Action.DELETE: f"Delete the volume {name}?",
        Action.DEREGISTER: f"Deregister the volume {name}? Its data is kept.",
    }
    return questions[change.action]


def summary_question(plan: Plan) -> str:
    counts: dict[tuple[Action, str], int] = {}
    for change in plan.actionable:
        key = (change.action, record_kind(change))
        counts[key] = counts.get(key, 0) + 1
    order = {action: index for index, action in enumerate(SUMMARY_ORDER)}
    parts = [
        f"{_VERBS[action]} {count} {kind}{'s' if count > 1 else ''}"
        for (action, kind), count in sorted(counts.items(), key=lambda item: (order[item[0][0]], item[0][1]))
    ]
    return f"This will {', '.join(parts)}. Proceed?"


def volume_name(change: Change) -> str:
    name: str = (change.after or change.before or {}).get("name", change.address)
    return name
