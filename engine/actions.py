"""The plan vocabulary: actions, changes and the plan itself.

Action strings live here and nowhere else. The human renderer is the only place that turns
a node's create into "start" or a mount's create into "attach".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Action(str, enum.Enum):
    NO_OP = "no-op"
    CREATE = "create"
    REGISTER = "register"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    DEREGISTER = "deregister"

    # Whether the action changes anything; false for NO_OP only.
    is_change: bool

    def __init__(self, value: str) -> None:
        # An attribute set once per member, not a property: a plan of 10,000 volumes and 2,000
        # runs tests it hundreds of thousands of times between planning and rendering.
        self.is_change = value != "no-op"


# Order used by summaries: "Plan: 2 to create, 1 to update, 1 to deregister."
SUMMARY_ORDER = (
    Action.CREATE,
    Action.REGISTER,
    Action.UPDATE,
    Action.REPLACE,
    Action.DELETE,
    Action.DEREGISTER,
)

Record = dict[str, Any]


# slots: a large plan makes one Change per recorded resource, and slots make them smaller and
# faster to create.
@dataclass(slots=True)
class Change:
    """One planned change: the executor reads everything but `reason`, which is for people."""

    address: str
    action: Action
    reason: str
    before: Record | None
    after: Record | None
    previous_address: str | None = None
    destroys_data: bool = False
    # Fields whose values differ between before and after, for renderers.
    changed_fields: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "address": self.address,
            "action": self.action.value,
            "reason": self.reason,
            "before": _sorted(self.before),
            "after": _sorted(self.after),
        }
        if self.previous_address is not None:
            data["previous_address"] = self.previous_address
        return data


@dataclass
class Plan:
    """The changes in execution order, their dependency edges and what people should know."""

    changes: list[Change]
    edges: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lineage: str | None = None
    serial: int | None = None

    @property
    def actionable(self) -> list[Change]:
        return [change for change in self.changes if change.action.is_change]

    def counts(self) -> dict[Action, int]:
        counts = {action: 0 for action in SUMMARY_ORDER}
        for change in self.actionable:
            counts[change.action] += 1
        return counts

    def summary_json(self) -> dict[str, int]:
        counts = self.counts()
        return {action.value: counts[action] for action in SUMMARY_ORDER}


def _sorted(record: Record | None) -> Record | None:
    return None if record is None else {key: record[key] for key in sorted(record)}
