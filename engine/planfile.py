"""Saved plans: the file `plan --out FILE` writes and `apply FILE` executes.

A saved plan contains every field of the Plan and its Changes, so the executor runs exactly
the changes that were shown. It is bound to the lineage of the state it was made from and to a
fingerprint of each state record that the plan reads or changes. Those are the records at the
addresses of its actionable changes, at their previous addresses, and at both ends of its
dependency edges. `apply FILE` accepts the plan while the lineage matches and those records are
unchanged, even if other records changed since; it rejects the plan naming each address that
moved. A plan made with no state runs only while there is still no state.

The file is JSON with its own `format_version`, written with mode 0600 because it carries
the same records as the state. Format 1 bound a plan to the whole state's serial; this volplan
reads format 2 only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import __version__
from engine.actions import Action, Change, Plan, Record
from engine.errors import UsageError
from state.model import State
from state.store import write_file_atomically

PLAN_FORMAT = "volplan-plan"
PLAN_FORMAT_VERSION = 2
# More than any real plan needs; a larger file is not a plan that volplan wrote.
MAX_PLAN_FILE_BYTES = 512 * 1024 * 1024


def record_fingerprint(record: Record) -> str:
    """Return the SHA-256 of a state record's canonical JSON: equal records, equal fingerprints."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def bound_addresses(plan: Plan) -> set[str]:
    """Return the addresses whose state records a plan reads or changes."""
    addresses: set[str] = set()
    for change in plan.actionable:
        addresses.add(change.address)
        if change.previous_address is not None:
            addresses.add(change.previous_address)
    for source, target in plan.edges:
        addresses.update((source, target))
    return addresses


@dataclass(frozen=True)
class StateBinding:
    """The state a plan was made from: its lineage and the records the plan depends on."""

    lineage: str | None
    # The serial is recorded for people; apply compares the records, not the serial.
    serial: int | None
    # Fingerprint of each bound record by address; None when the state had no record there.
    resources: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: Plan, state: State | None) -> StateBinding:
        records = state.resources if state is not None else {}
        fingerprints = {address: _fingerprint_at(records, address) for address in sorted(bound_addresses(plan))}
        if state is None:
            return cls(None, None, fingerprints)
        return cls(state.lineage, state.serial, fingerprints)

    def describe(self) -> str:
        if self.lineage is None:
            return "no state"
        return f"lineage {self.lineage}, serial {self.serial}"


@dataclass
class SavedPlan:
    plan: Plan
    # Fingerprints of the records the plan reads or changes (see StateBinding.resources).
    resources: dict[str, str | None] = field(default_factory=dict)
    volplan_version: str = __version__

    @classmethod
    def bind(cls, plan: Plan, state: State | None) -> SavedPlan:
        """Bind `plan` to `state`, the state as read from disk when the plan was made."""
        return cls(plan, dict(StateBinding.of(plan, state).resources))

    @property
    def binding(self) -> StateBinding:
        return StateBinding(self.plan.lineage, self.plan.serial, self.resources)


def stale_reason(binding: StateBinding, state: State | None, journal_pending: bool) -> str | None:
    """Explain why a plan bound to `binding` may not run against `state`; None when it may."""
    if journal_pending:
        return "an interrupted apply left a journal since the plan was made"
    if binding.lineage is None:
        if state is None:
            return None
        return f"the plan was made with no state, and the state now exists (lineage {state.lineage}, serial {state.serial})"
    if state is None:
        return f"the plan was made from {binding.describe()}, and the state file is now missing"
    if state.lineage != binding.lineage:
        return f"the plan was made from lineage {binding.lineage}, but the state has lineage {state.lineage}"

    moved = [
        _describe_move(address, then, _fingerprint_at(state.resources, address))
        for address, then in sorted(binding.resources.items())
        if _fingerprint_at(state.resources, address) != then
    ]
    if not moved:
        return None
    return f"{'; '.join(moved)} (serial {binding.serial} then, {state.serial} now)"


def _fingerprint_at(records: Mapping[str, Record], address: str) -> str | None:
    record = records.get(address)
    return None if record is None else record_fingerprint(record)


def _describe_move(address: str, then: str | None, now: str | None) -> str:
    if then is None:
        return f"{address} was added to the state since the plan was made"
    if now is None:
        return f"{address} was removed from the state since the plan was made"
    return f"{address} changed since the plan was made"


def write_plan_file(path: Path, saved: SavedPlan) -> None:
    """Write `saved` atomically with mode 0600; check first that reading it back loses nothing."""
    if path.name in ("", ".", ".."):
        raise UsageError("Cannot write the plan file", f"{str(path)!r} names no file. Pass --out FILE.")
    unbound = sorted(bound_addresses(saved.plan) - set(saved.resources))
    if unbound:
        raise AssertionError(f"a saved plan is not bound to the records at {', '.join(unbound)}")
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
        "state": {
            "lineage": saved.binding.lineage,
            "serial": saved.binding.serial,
            "resources": dict(sorted(saved.resources.items())),
        },
        "changes": [_change_to_json(change) for change in plan.changes],
        "edges": [list(edge) for edge in plan.edges],
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
    }


def plan_from_json(data: Any, origin: str) -> SavedPlan:
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise _not_a_plan(Path(origin), "it has no volplan plan header")
    if data.get("format_version") == 1:
        raise UsageError(
            "Unsupported plan file",
            f"{origin} has plan format 1, written by an older volplan that bound a plan to the whole state's "
            f"serial; this volplan reads format {PLAN_FORMAT_VERSION}, which binds a plan to the resources it "
            "reads or changes. Make the plan again with volplan plan --out.",
        )
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
        resources = _resources_from_json(data["state"]["resources"])
        changes = [_change_from_json(item) for item in data["changes"]]
        edges = [(str(edge[0]), str(edge[1])) for edge in data["edges"]]
        warnings = [str(text) for text in data["warnings"]]
        notes = [str(text) for text in data["notes"]]
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise _not_a_plan(Path(origin), f"it is damaged ({type(error).__name__}: {error})") from None
    plan = Plan(changes, edges, warnings, notes, lineage=binding.lineage, serial=binding.serial)

    unbound = sorted(bound_addresses(plan) - set(resources))
    if unbound:
        raise _not_a_plan(Path(origin), f"it records no state fingerprint for {', '.join(unbound)}")
    return SavedPlan(plan, resources, version)


def _resources_from_json(data: Any) -> dict[str, str | None]:
    if not isinstance(data, dict):
        raise TypeError("state.resources is not an object")
    resources: dict[str, str | None] = {}
    for address, fingerprint in data.items():
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"the fingerprint of {address} is not a string")
        resources[str(address)] = fingerprint
    return resources


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
