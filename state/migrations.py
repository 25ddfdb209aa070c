"""State upgrades: bring a state file read from disk up to the version this volplan writes.

The version is read before anything else. A newer version is rejected before any other check,
so nothing is written. An older version goes through `_STEPS` one version at a time, in
memory. Then every record gets the fields this version needs: from a safe default where one
exists, or marked undecided so that the refresh can decide it. The file on disk changes only
when a command writes the state, and the store first keeps the file as read in a dated backup.

Version 1 is the only version so far. A version-1 file can still lack fields that later
version-1 code reads (`provider` and `external` on volume records), so filling them is the
migration that exists today. A version 2 adds one function to `_STEPS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import StateError

STATE_VERSION = 1
OLDEST_VERSION = 1

Document = dict[str, Any]

# Upgrade steps by the version they read: `_STEPS[n]` turns a version-n document into n + 1.
_STEPS: dict[int, Callable[[Document], Document]] = {}

# The provider of a volume record that has none. Every volume record volplan writes has
# carried `provider` since before any kind other than the built-in `local` existed, so a
# record without one was made by `local`.
DEFAULT_PROVIDER = "local"


@dataclass(frozen=True)
class Migration:
    """The changes an upgrade made in memory, for the plan's warnings and the dated backup."""

    from_version: int
    filled: tuple[str, ...] = ()
    # Volume addresses whose `external` flag was missing; `decide_external` settles them.
    undecided_external: frozenset[str] = field(default_factory=frozenset)

    @property
    def changed(self) -> bool:
        return self.from_version != STATE_VERSION or bool(self.filled) or bool(self.undecided_external)


def read_version(data: Document, origin: str, restore: Callable[[], str]) -> int:
    """Read and check the version; reject a version newer than this volplan's.

    `restore` returns the sentence that names where to restore a damaged file from.
    """
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateError(
            "Damaged state file", f"{origin}: version is {json.dumps(version)}, expected a number. {restore()}"
        )
    if version > STATE_VERSION:
        raise StateError(
            "State file from a newer volplan",
            f"{origin} has version {version}; this volplan reads versions {OLDEST_VERSION} to {STATE_VERSION}. "
            "Upgrade volplan to use it. The file was left untouched.",
        )
    if version < OLDEST_VERSION:
        raise StateError(
            "Damaged state file",
            f"{origin}: version {version} is not a volplan state version (the first is {OLDEST_VERSION}). {restore()}",
        )
    return version


def upgrade(data: Document, version: int) -> tuple[Document, Migration | None]:
    """Upgrade a document of `version` to STATE_VERSION in memory; None when nothing changed."""
    for step_version in range(version, STATE_VERSION):
        data = _STEPS[step_version](data)
        data["version"] = step_version + 1

    filled: list[str] = []
    undecided: set[str] = set()
    resources = data.get("resources")
    if isinstance(resources, list):
        for record in resources:
            if isinstance(record, dict) and record.get("kind") == "volume":
                _fill_volume(record, filled, undecided)

    migration = Migration(version, tuple(filled), frozenset(undecided))
    return data, migration if migration.changed else None


def _fill_volume(record: dict[str, Any], filled: list[str], undecided: set[str]) -> None:
    address = record.get("address")
    if "provider" not in record:
        record["provider"] = DEFAULT_PROVIDER
        filled.append(f"{address}: no provider recorded; set to {DEFAULT_PROVIDER}")
    if "external" not in record:
        # Registered until shown otherwise: deregistering keeps the data, deleting would not.
        record["external"] = True
        undecided.add(str(address))


def decide_external(
    resources: Mapping[str, dict[str, Any]], undecided: frozenset[str], lineage: str, creators: Mapping[str, str | None]
) -> list[str]:
    """Settle missing `external` flags from the lineage that each volume's provider reports.

    `creators` maps refreshed addresses to the lineage of the state whose apply created the
    volume (None when the provider does not know). A volume created for this state is
    managed; any other stays registered, so volplan never deletes data it did not create.
    Returns one message per record, for the plan's warnings.
    """
    messages = []
    for address in sorted(undecided):
        record = resources.get(address)
        if record is None:
            continue
        if address in creators and creators[address] == lineage:
            record["external"] = False
            messages.append(f"{address}: the state had no external flag; volplan created this volume, so it is managed")
        else:
            # NOTE: a volume that volplan created for this state before its provider recorded
            # the lineage stays registered. If its configuration is managed, the plan shows a
            # replacement: check the plan before approving it.
            messages.append(
                f"{address}: the state had no external flag and the provider does not show that volplan created "
                "this volume, so it is treated as registered: removing its configuration keeps its data"
            )
    return messages
