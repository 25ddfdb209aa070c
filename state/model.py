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
# Fields a record of a kind may carry, with their JSON types (None is written as null).
_OPTIONAL: dict[str, dict[str, type | tuple[type, ...]]] = {
    "volume": {
        "region": (str, type(None)),
        "availability_zone": (str, type(None)),
        "size_gb": (int, type(None)),
        "auto_cleanup_duration": (int, type(None)),
        "created_at": (str, type(None)),
        "file": (str, type(None)),
        "name_override": (str, type(None)),
        "volume_id": (str, type(None)),
        "tags": dict,
    },
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
        where = f"{_at(origin, text, _address_key(address), occurrence=2 if address in indexed else 1)}: resources[{position}]"
        if address in indexed:
            raise StateError("Damaged state file", f"{where}: address {address} appears twice. {restore}")
        _check_fields(record, where, restore)
        indexed[address] = record
    return indexed


def _check_fields(record: Record, where: str, restore: str) -> None:
    kind = record.get("kind")
    required = _REQUIRED.get(str(kind))
    if required is None:
        # Kinds this version does not model in depth are kept as they are.
        if not isinstance(kind, str):
            raise StateError("Damaged state file", f"{where} ({record['address']}) has no kind. {restore}")
        return
    present = {name: expected for name, expected in _OPTIONAL.get(str(kind), {}).items() if name in record}
    for name, expected in {**required, **present}.items():
        value = record.get(name)
        wrong_bool = isinstance(value, bool) and bool not in _as_tuple(expected)
        if not isinstance(value, expected) or wrong_bool or not _text_mapping(name, value):
            raise StateError(
                "Damaged state file",
                f"{where} ({record['address']}): {name} is {_shorten(json.dumps(value))}, "
                f"expected {_type_name(expected)}. {restore}",
            )


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _text_mapping(name: str, value: Any) -> bool:
    """Tags map strings to strings; any other field passes."""
    return name != "tags" or all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _shorten(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


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
    names = {str: "a string", bool: "true or false", int: "a number", dict: "a mapping of strings", type(None): "null"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
