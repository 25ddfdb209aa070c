"""dstack's volume table (NAME BACKEND REGION STATUS CREATED) and its JSON form.

`volume list`, `volume get` and `apply -f` print it. The rows come from the state, with each
volume's status and attachments as its provider reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from engine.actions import Record
from engine.units import format_size
from engine.workflow import Workspace, refresh
from providers.base import VolumeFacts
from state.model import State

BASE_COLUMNS = ("NAME", "BACKEND", "REGION", "STATUS", "CREATED")
VERBOSE_COLUMNS = ("ID", "SIZE", "ATTACHED", "ERROR")
NOT_FOUND = "not found"
NOT_REFRESHED = "-"


@dataclass(frozen=True)
class VolumeRow:
    """A recorded volume and, when it was refreshed, what its provider reports now."""

    record: Record
    facts: VolumeFacts | None
    refreshed: bool

    @property
    def status(self) -> str:
        if not self.refreshed:
            return NOT_REFRESHED
        return self.facts.status if self.facts else NOT_FOUND

    @property
    def error(self) -> str:
        if not self.refreshed or self.facts is not None:
            return ""
        if self.record.get("external"):
            return "the registered volume no longer exists"
        return "deleted outside volplan; apply creates it again, empty"

    @property
    def attachments(self) -> list[str]:
        return list(self.facts.attachments) if self.facts else []

    def to_json(self) -> dict[str, Any]:
        record = self.record
        size = self.facts.size_gb if self.facts else record.get("size_gb")
        return {
            "name": record.get("name"),
            "address": record.get("address"),
            "id": record.get("id"),
            "backend": record.get("backend"),
            "region": record.get("region"),
            "availability_zone": record.get("availability_zone"),
            "size_gb": size,
            "status": self.status,
            "created_at": record.get("created_at"),
            "external": bool(record.get("external")),
            "provider": record.get("provider"),
            "file": record.get("file"),
            "name_override": record.get("name_override"),
            "attachments": self.attachments,
            "error": self.error or None,
        }


def volume_rows(
    workspace: Workspace, selected: Callable[[Record], bool] = lambda record: True, refresh_status: bool = True
) -> list[VolumeRow]:
    """Read the state's volumes that `selected` accepts, sorted by address, and refresh them in one batch."""
    state = workspace.store.read()
    if state is None:
        return []
    records = {a: r for a, r in state.resources.items() if r.get("kind") == "volume" and selected(r)}
    facts = refresh(State(state.lineage, state.serial, records), workspace.providers) if refresh_status else {}
    return [VolumeRow(records[address], facts.get(address), refresh_status) for address in sorted(records)]


def render_table(rows: list[VolumeRow], verbose: bool = False, now: datetime | None = None) -> str:
    """Format the rows as dstack does: a leading space, columns two spaces apart, no borders."""
    now = now or datetime.now(timezone.utc)
    header = BASE_COLUMNS + (VERBOSE_COLUMNS if verbose else ())
    cells = [list(header)] + [_cells(row, verbose, now) for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    lines = [" " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cells(row: VolumeRow, verbose: bool, now: datetime) -> list[str]:
    record = row.record
    cells = [
        str(record.get("name", "")),
        str(record.get("backend", "")),
        str(record.get("region") or ""),
        row.status,
        pretty_age(record.get("created_at"), now),
    ]
    if verbose:
        size = row.facts.size_gb if row.facts else record.get("size_gb")
        cells += [
            str(record.get("id", "")),
            format_size(size) if size else "",
            ", ".join(row.attachments) or "-",
            row.error,
        ]
    return cells


def pretty_age(created_at: str | None, now: datetime) -> str:
    """Format the age of an ISO 8601 UTC time in dstack's words: `now`, `5 mins ago`, `3 weeks ago`."""
    if not created_at:
        return ""
    try:
        created = datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return created_at
    seconds = int((now - created).total_seconds())
    if seconds < 10:
        return "now"
    for unit, length in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400)):
        if seconds >= length:
            return _ago(seconds // length, unit)
    for unit, length in (("hour", 3600), ("min", 60), ("sec", 1)):
        if seconds >= length:
            return _ago(seconds // length, unit)
    return "now"


def _ago(count: int, unit: str) -> str:
    return f"{count} {unit}{'s' if count > 1 else ''} ago"
