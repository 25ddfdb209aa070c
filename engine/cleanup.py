"""Idle clean-up: the plan of `volplan cleanup`.

dstack deletes a volume that no run has used for longer than its `auto_cleanup_duration`.
volplan has no daemon, so `volplan cleanup` is the command a scheduled job runs: it plans the
deletion of every managed volume in the state that has been unattached for longer than the
`auto_cleanup_duration` recorded with it. The idle time is measured from what the provider
reports (`VolumeFacts.idle_since`: the last detach, or the creation), never from the state.

Registered volumes are never cleaned up, and neither are protected ones: a scheduled job must
not fail forever because of one entry of `protect:`, so those are left alone with a warning.

Pure: the refresh results and the current time are data.
"""

from __future__ import annotations

from datetime import datetime, timezone

from engine.actions import Action, Change, Plan, Record
from engine.planner import PlanInput
from engine.units import format_duration, format_size
from providers.base import VolumeFacts

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def plan_cleanup(source: PlanInput, now: datetime) -> Plan:
    """Plan the deletion of the managed volumes idle for longer than their auto_cleanup_duration."""
    prior = source.prior
    plan = Plan(changes=[], lineage=prior.lineage if prior else None, serial=prior.serial if prior else None)
    plan.notes.extend(source.provider_header)
    if prior is None:
        return plan

    protected = set(source.project.settings.protect)
    for address, record in sorted(prior.resources.items()):
        if record.get("kind") != "volume" or record.get("external") or not record.get("auto_cleanup_duration"):
            continue
        if address not in source.facts:
            plan.warnings.append(f"{address} was not read from its provider, so its idle time is unknown.")
            continue
        change = _plan_volume(record, source.facts[address], now, address in protected, plan)
        if change is not None:
            plan.changes.append(change)

    plan.changes.sort(key=lambda change: (change.action is Action.NO_OP, change.address))
    return plan


def _plan_volume(
    record: Record, facts: VolumeFacts | None, now: datetime, protected: bool, plan: Plan
) -> Change | None:
    address = record["address"]
    if facts is None:
        plan.warnings.append(
            f"{address}: volume {record['id']} no longer exists at its provider; volplan refresh removes it from the state."
        )
        return None
    if facts.idle_since is None:
        return Change(address, Action.NO_OP, "attached, so not idle", record, record)

    limit = int(record["auto_cleanup_duration"])
    try:
        idle = int((now - _parse_time(facts.idle_since)).total_seconds())
    except ValueError:
        plan.warnings.append(
            f"{address}: the provider reports an unreadable idle time {facts.idle_since!r}; left alone."
        )
        return None
    unattached = f"unattached for {describe_seconds(idle)}"
    if idle <= limit:
        return Change(
            address,
            Action.NO_OP,
            f"{unattached}, within its auto_cleanup_duration of {format_duration(limit)}",
            record,
            record,
        )
    if protected:
        plan.warnings.append(
            f"{address} has been {unattached}, longer than its auto_cleanup_duration of {format_duration(limit)}, "
            "but protect: in volplan.yml lists it, so cleanup leaves it alone."
        )
        return Change(address, Action.NO_OP, f"{unattached}, but protected", record, record)

    size = f" ({format_size(record['size_gb'])})" if record.get("size_gb") else ""
    return Change(
        address,
        Action.DELETE,
        f"{unattached}, longer than its auto_cleanup_duration of {format_duration(limit)}; "
        f"the volume{size} and its data will be destroyed",
        record,
        None,
        destroys_data=True,
    )


def describe_seconds(seconds: int) -> str:
    """Format a length of time in its two largest units, such as `8d 2h` or `5m 10s`."""
    parts: list[str] = []
    remaining = max(0, seconds)
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    shown = [part for part in parts[:2] if not part.startswith("0")]
    return " ".join(shown) or "0s"


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
