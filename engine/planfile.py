"""Saved plans: the file `plan --out FILE` writes and `apply FILE` executes.

A saved plan contains every field of the Plan and its Changes, so the executor runs exactly
the changes that were shown. It is bound to the state it was made from by that state's lineage
and serial, or by "no state" when there was none. `apply FILE` rejects a plan whose binding no
longer matches the state.

The file is JSON with its own `format_version`, written with mode 0600 because it carries
the same records as the state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import __version__
from engine.actions import Action, Change, Plan
from engine.errors import UsageError
from state.model import State
from state.store import write_file_atomically

PLAN_FORMAT = "volplan-plan"
PLAN_FORMAT_VERSION = 1
# More than any real plan needs; a larger file is not a plan that volplan wrote.
MAX_PLAN_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class StateBinding:
    """The state a plan was made from: its lineage and serial, or no state at all."""

    lineage: str | None
    serial: int | None

    @classmethod
    def of(cls, state: State | None) -> StateBinding:
        return cls(None, None) if state is None else cls(state.lineage, state.serial)

    def describe(self) -> str:
        if self.lineage is None:
            return "no state"
        return f"lineage {self.lineage}, serial {self.serial}"


@dataclass
class SavedPlan:
    plan: Plan
    volplan_version: str = __version__

    @property
    def binding(self) -> StateBinding:
        return StateBinding(self.plan.lineage, self.plan.serial)


def stale_reason(binding: StateBinding, state: State | None, journal_pending: bool) -> str | None:
    """Explain why a plan bound to `binding` may not run against `state`; None when it may."""
    if journal_pending:
        return "an interrupted apply left a journal since the plan was made"
    now = StateBinding.of(state)
    if now == binding:
        return None
    if binding.lineage is None:
        return f"the plan was made with no state, and the state now exists ({now.describe()})"
    if now.lineage is None:
        return f"the plan was made from {binding.describe()}, and the state file is now missing"
    if now.lineage != binding.lineage:
        return f"the plan was made from lineage {binding.lineage}, but the state has lineage {now.lineage}"
    return f"the state has changed since the plan was made (serial {binding.serial} then, {now.serial} now)"


def write_plan_file(path: Path, saved: SavedPlan) -> None:
    """Write `saved` atomically with mode 0600; check first that reading it back loses nothing."""
    if path.name in ("", ".", ".."):
        raise UsageError("Cannot write the plan file", f"{str(path)!r} names no file. Pass --out FILE.")
    document = plan_to_json(saved)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if plan_from_json(json.loads(text), str(path)) != saved:
        raise AssertionError("a saved plan does not read back as the plan it was written from")
    try:
        write_file_atomically(path, text)
    except OSError as error:
        raise UsageError(
            "Cannot write the plan file", f"{path}: {error.strerror}. Choose a writable path with --out."
        ) from None


def read_plan_file(path: Path) -> SavedPlan:
    """Read a saved plan, raising UsageError naming the file and the fix when it is not one."""
    try:
        if path.stat().st_size > MAX_PLAN_FILE_BYTES:
            raise _not_a_plan(path, "it is larger than any plan volplan writes")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            "Plan file not found", f"{path} does not exist. Make one with volplan plan --out {path.name}."
        ) from None
    except OSError as error:
        raise UsageError("Cannot read the plan file", f"{path}: {error.strerror}.") from None

    if path.name.endswith((".dstack.yml", ".dstack.yaml")):
        raise UsageError(
            "Not a plan file",
            f"{path} is a configuration, not a saved plan. To apply a configuration, run volplan apply -f {path}.",
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_a_plan(path, "it is not JSON") from None
    return plan_from_json(data, str(path))


def plan_to_json(saved: SavedPlan) -> dict[str, Any]:
    plan = saved.plan
    return {
        "format": PLAN_FORMAT,
        "format_version": PLAN_FORMAT_VERSION,
        "volplan_version": saved.volplan_version,
        "state": {"lineage": saved.binding.lineage, "serial": saved.binding.serial},
        "changes": [_change_to_json(change) for change in plan.changes],
        "edges": [list(edge) for edge in plan.edges],
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
    }


def plan_from_json(data: Any, origin: str) -> SavedPlan:
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise _not_a_plan(Path(origin), "it has no volplan plan header")
    if data.get("format_version") != PLAN_FORMAT_VERSION:
        raise UsageError(
            "Unsupported plan file",
            f"{origin} has plan format {data.get('format_version')!r}; this volplan reads format "
            f"{PLAN_FORMAT_VERSION}. Make the plan again with this volplan.",
        )
    version = data.get("volplan_version")
    if version != __version__:
        raise UsageError(
            "Plan made by another volplan",
            f"{origin} was made by volplan {version}; this is volplan {__version__}. "
            "A plan is applied by the version that made it: run volplan plan --out again.",
        )

    try:
        binding = StateBinding(data["state"]["lineage"], data["state"]["serial"])
        changes = [_change_from_json(item) for item in data["changes"]]
        edges = [(str(edge[0]), str(edge[1])) for edge in data["edges"]]
        warnings = [str(text) for text in data["warnings"]]
        notes = [str(text) for text in data["notes"]]
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise _not_a_plan(Path(origin), f"it is damaged ({type(error).__name__}: {error})") from None
    plan = Plan(changes, edges, warnings, notes, lineage=binding.lineage, serial=binding.serial)
    return SavedPlan(plan, version)


def _change_to_json(change: Change) -> dict[str, Any]:
    return {
        "address": change.address,
        "action": change.action.value,
        "reason": change.reason,
        "before": change.before,
        "after": change.after,
        "previous_address": change.previous_address,
        "destroys_data": change.destroys_data,
        "changed_fields": list(change.changed_fields),
    }


def _change_from_json(item: dict[str, Any]) -> Change:
    before, after = item["before"], item["after"]
    if not isinstance(item["address"], str) or not all(r is None or isinstance(r, dict) for r in (before, after)):
        raise ValueError(f"change {item.get('address')!r} has the wrong shape")
    return Change(
        address=item["address"],
        action=Action(item["action"]),
        reason=str(item["reason"]),
        before=before,
        after=after,
        previous_address=item["previous_address"],
        destroys_data=bool(item["destroys_data"]),
        changed_fields=tuple(str(name) for name in item["changed_fields"]),
    )


def _not_a_plan(path: Path, why: str) -> UsageError:
    return UsageError(
        "Not a plan file",
        f"{path} is not a plan saved by volplan plan --out: {why}. Make one with volplan plan --out FILE.",
    )
