"""The state file's model and its canonical JSON form.

The file is exactly `json.dumps(state, indent=2, sort_keys=True) + "\\n"` with the resources
sorted by address, so that a git diff shows only real changes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.errors import StateError
from state.migrations import STATE_VERSION, Migration, read_version, upgrade

__all__ = ["STATE_VERSION", "Record", "State", "parse_state"]

Record = dict[str, Any]

# Fields every record of a kind must carry, with their JSON types.
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "volume": {
        "address": str,
        "kind": str,
        "name": str,
        "id": str,
        "provider": str,
        "backend": str,
        "external": bool,
    },
    "run": {"address": str, "kind": str, "name": str, "provider": str, "backend": str, "stopped": bool},
    "node": {"address": str, "kind": str, "run": str, "id": str, "provider": str, "backend": str},
    "mount": {"address": str, "kind": str, "node": str, "path": str, "provider": str, "backend": str},
}


@dataclass
class State:
    lineage: str
    serial: int = 0
    resources: dict[str, Record] = field(default_factory=dict)
    version: int = STATE_VERSION
    # What upgrading the file as read changed in memory; None when it was already current.
    migration: Migration | None = field(default=None, compare=False)

    @classmethod
    def new(cls) -> State:
        return cls(lineage=str(uuid.uuid4()))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "lineage": self.lineage,
            "serial": self.serial,
            "resources": [self.resources[address] for address in sorted(self.resources)],
        }

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def same_content(self, other: State) -> bool:
        return self.lineage == other.lineage and self.resources == other.resources

    def copy(self) -> State:
        resources = {address: dict(record) for address, record in self.resources.items()}
        return State(self.lineage, self.serial, resources, self.version, self.migration)


def parse_state(text: str, origin: str) -> State:
    """Parse and check a state file's text; a damaged file raises StateError naming the fix."""
    restore = f"Restore it from git or from {origin}.backup, then run the command again."
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise StateError(
            "Damaged state file",
            f"{origin}:{error.lineno}:{error.colno}: invalid JSON ({error.msg}). {restore}",
        ) from None
    if not isinstance(data, dict):
        raise StateError("Damaged state file", f"{origin}: the top level is not a JSON object. {restore}")

    data, migration = upgrade(data, read_version(data, origin, restore))

    lineage = data.get("lineage")
    serial = data.get("serial")
    resources = data.get("resources")
    if not isinstance(lineage, str) or not _is_uuid(lineage):
        raise StateError(
            "Damaged state file",
            f"{_at(origin, text, _LINEAGE_KEY)}: lineage {json.dumps(lineage)} is not a UUID. {restore}",
        )
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise StateError(
            "Damaged state file",
            f"{_at(origin, text, _SERIAL_KEY)}: serial {json.dumps(serial)} is not a non-negative number. {restore}",
        )
    if not isinstance(resources, list):
        raise StateError("Damaged state file", f"{origin}: resources is not a list. {restore}")

    return State(lineage, serial, _index_resources(resources, origin, text, restore), STATE_VERSION, migration)


def _index_resources(resources: list[Any], origin: str, text: str, restore: str) -> dict[str, Record]:
    indexed: dict[str, Record] = {}
    for position, record in enumerate(resources):
        if not isinstance(record, dict) or not isinstance(record.get("address"), str):
            raise StateError("Damaged state file", f"{origin}: resources[{position}] has no address. {restore}")
        address = record["address"]
        if address in indexed:
            where = _where(origin, text, address, position, occurrence=2)
            raise StateError("Damaged state file", f"{where}: address {address} appears twice. {restore}")
        problem = _field_problem(record)
        if problem is not None:
            where = _where(origin, text, address, position)
            raise StateError("Damaged state file", f"{where} ({address}){problem}. {restore}")
        indexed[address] = record
    return indexed


def _where(origin: str, text: str, address: str, position: int, occurrence: int = 1) -> str:
    # Finding the line scans the text, so it is done only for the record that is reported.
    return f"{_at(origin, text, _address_key(address), occurrence)}: resources[{position}]"


def _field_problem(record: Record) -> str | None:
    """Describe the first required field that is missing or of the wrong type, or return None."""
    kind = record.get("kind")
    required = _REQUIRED.get(str(kind))
    if required is None:
        # Kinds this version does not model in depth are kept as they are.
        return None if isinstance(kind, str) else " has no kind"
    for name, expected in required.items():
        value = record.get(name)
        if not isinstance(value, expected):
            return f": {name} is {json.dumps(value)}, expected {_type_name(expected)}"
    return None


_LINEAGE_KEY = '"lineage":'
_SERIAL_KEY = '"serial":'


def _address_key(address: str) -> str:
    return f'"address": {json.dumps(address)}'


def _at(origin: str, text: str, needle: str, occurrence: int = 1) -> str:
    """`origin:line` for the given occurrence of `needle` in the file, or `origin` alone."""
    index = -1
    for _ in range(occurrence):
        index = text.find(needle, index + 1)
        if index < 0:
            return origin
    return f"{origin}:{text.count(chr(10), 0, index) + 1}"


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "a number"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
