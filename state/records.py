"""Checks of the records in a state file: kinds, fields, addresses, nesting and provider ids.

A state file edited by hand or merged badly can record a volume at an address that its name
does not give, one provider id at two addresses, or values that volplan never writes. Planning
from such a file deletes real volumes or leaves them untracked, so every record is checked
before a command uses the state, and every problem found is reported together.

Pure: the records are data. `state.model` turns the problems into one error with positions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.units import MAX_SIZE_GB
from engine.volume_config import VOLUME_NAME_FIX, is_volume_name

Record = dict[str, Any]
FieldType = type | tuple[type, ...]

KINDS = ("volume", "run", "node", "mount")
# Set by `volplan state mv` on a volume whose name at the provider is still the old one: its
# address then differs from `volume.<name>` until the next apply renames the volume.
PENDING_RENAME = "pending_rename"

# Fields every record of a kind must carry, with their JSON types.
_REQUIRED: dict[str, dict[str, FieldType]] = {
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
# Fields a record of a kind may carry, with their JSON types (None is written as null). Older
# files may lack any of them.
_OPTIONAL: dict[str, dict[str, FieldType]] = {
    "volume": {
        "region": (str, type(None)),
        "availability_zone": (str, type(None)),
        "size_gb": int,
        "auto_cleanup_duration": (int, type(None)),
        "created_at": (str, type(None)),
        "file": (str, type(None)),
        "name_override": (str, type(None)),
        "volume_id": (str, type(None)),
        "tags": dict,
        PENDING_RENAME: bool,
    },
    "node": {"rank": int},
}
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a number", dict: "a mapping", type(None): "null"}


def _exact_types(expected: FieldType) -> frozenset[type]:
    return frozenset(expected if isinstance(expected, tuple) else (expected,))


# Per kind: (field, exact types, required). A value of one of these exact types always passes
# _has_type, so a record whose fields all match needs no closer look.
_EXACT_TYPES: dict[str, tuple[tuple[str, frozenset[type], bool], ...]] = {
    kind: tuple((name, _exact_types(expected), True) for name, expected in required.items())
    + tuple((name, _exact_types(expected), False) for name, expected in _OPTIONAL.get(kind, {}).items())
    for kind, required in _REQUIRED.items()
}

# `run.NAME.node[INDEX]`: the index is a whole number written without leading zeros.
_NODE_SUFFIX = re.compile(r"\.node\[(0|[1-9][0-9]*)\]")


@dataclass(frozen=True)
class Problem:
    """One problem with one record of `resources`."""

    position: int
    # The field at fault, to locate its line; None when the record as a whole is at fault.
    field: str | None
    text: str


def check_records(resources: list[Any]) -> tuple[dict[str, Record], list[Problem]]:
    """Index the records by address and check them; return the index and every problem found."""
    indexed: dict[str, Record] = {}
    positions: dict[str, int] = {}
    problems: list[Problem] = []
    for position, record in enumerate(resources):
        if not isinstance(record, dict) or not isinstance(record.get("address"), str):
            problems.append(Problem(position, None, "has no address"))
            continue
        address = record["address"]
        if address in indexed:
            problems.append(Problem(position, "address", f"address {address} appears twice"))
            continue
        indexed[address] = record
        positions[address] = position
        found = _record_problems(record)
        if found:
            problems.extend(Problem(position, name, text) for name, text in found)

    problems.extend(_cross_record_problems(indexed, positions))
    return indexed, sorted(problems, key=lambda problem: problem.position)


def _record_problems(record: Record) -> list[tuple[str, str]]:
    """Check one record's kind, field types and, when the types are right, its values."""
    kind = record.get("kind")
    if kind not in KINDS:
        return [("kind", f"kind is {_show(kind)}, expected one of {', '.join(KINDS)}")]

    if not _types_match(record, _EXACT_TYPES[kind]):
        problems = _type_problems(record, kind)
        if problems:
            return problems
    return _VALUE_CHECKS[kind](record)


def _types_match(record: Record, fields: tuple[tuple[str, frozenset[type], bool], ...]) -> bool:
    """Return True when every field has one of its exact JSON types, and False when a field needs a closer look.

    json.loads builds only exact str, int, float, bool, dict, list and None values, so one set
    lookup per field settles nearly every record without the isinstance checks of _has_type.
    """
    for name, exact, required in fields:
        if name in record:
            if type(record[name]) not in exact:
                return False
        elif required:
            return False
    return True


def _type_problems(record: Record, kind: str) -> list[tuple[str, str]]:
    optional = {name: expected for name, expected in _OPTIONAL.get(kind, {}).items() if name in record}
    problems = []
    for name, expected in {**_REQUIRED[kind], **optional}.items():
        value = record.get(name)
        if not _has_type(value, expected):
            problems.append((name, f"{name} is {_show(value)}, expected {_type_name(expected)}"))
    return problems


def _volume_problems(record: Record) -> list[tuple[str, str]]:
    problems = []
    name = record["name"]
    valid_name = is_volume_name(name)
    if not valid_name:
        problems.append(("name", f"name {_show(name)} is not a valid volume name. {VOLUME_NAME_FIX}"))
    address = record["address"]
    if valid_name and address == "volume." + name:
        # The usual record: its address is built from a valid name, so it passes both address checks.
        pass
    elif not address.startswith("volume.") or not is_volume_name(address.removeprefix("volume.")):
        problems.append(("address", f"address {_show(address)} is not volume.NAME with a valid volume name"))
    elif address != f"volume.{name}" and record.get(PENDING_RENAME) is not True:
        problems.append(
            ("address", f"address {_show(address)} does not match name {_show(name)}: expected volume.{name}")
        )
    override = record.get("name_override")
    if override is not None and override != name:
        problems.append(("name_override", f"name_override {_show(override)} differs from its name {_show(name)}"))

    size = record.get("size_gb")
    if size is not None and not 1 <= size <= MAX_SIZE_GB:
        problems.append(("size_gb", f"size_gb is {_show(size)}, expected a whole number of GB from 1 to {MAX_SIZE_GB}"))
    tags = record.get("tags", {})
    if tags and not all(isinstance(key, str) and isinstance(value, str) for key, value in tags.items()):
        problems.append(("tags", f"tags is {_show(tags)}, expected a mapping of strings to strings"))
    problems.extend(_id_problems(record))
    return problems


def _run_problems(record: Record) -> list[tuple[str, str]]:
    # A run without a `name:` takes its file's name, so any text without a line break, NUL or
    # brackets is valid. The name may lag the address after `volplan state mv` until the next
    # apply, which records the name again.
    address = record["address"]
    name = address.removeprefix("run.")
    if not address.startswith("run.") or not name or any(character in name for character in "\n\r\x00[]"):
        return [("address", f"address {_show(address)} is not run.NAME")]
    return []


def _node_problems(record: Record) -> list[tuple[str, str]]:
    address, run = record["address"], record["run"]
    suffix = address.removeprefix(run) if address.startswith(run + ".node[") else ""
    match = _NODE_SUFFIX.fullmatch(suffix)
    if match is None:
        return [("address", f"address {_show(address)} does not match run {run}: expected {run}.node[INDEX]")]
    # The index in the address is not always the rank: every replica of a service has rank 0.
    return _id_problems(record)


def _mount_problems(record: Record) -> list[tuple[str, str]]:
    path = record["path"]
    if not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        return [("path", f"path {_show(path)} is not an absolute path without .. parts")]
    expected = f"{record['node']}.mount[{path}]"
    if record["address"] != expected:
        return [
            ("address", f"address {_show(record['address'])} does not match its node and path: expected {expected}")
        ]
    return []


def _id_problems(record: Record) -> list[tuple[str, str]]:
    """Reject ids that would leave their folder when a provider builds a path from them."""
    value = record["id"]
    if not value or value in (".", "..") or "/" in value or "\x00" in value or ".." in value:
        return [("id", f"id {_show(value)} is not a provider id: ids are not empty and contain no '/', '..' or NUL")]
    return []


_PARENT_FIELDS = {"node": "run", "mount": "node"}


def _cross_record_problems(indexed: Mapping[str, Record], positions: Mapping[str, int]) -> list[Problem]:
    """Check what spans records, in one pass over them.

    A node's run and a mount's node must be recorded, with the kind that the field names. No two
    volumes, and no two nodes, may record the same provider id. The nesting problems come before
    the duplicate ids, which the caller's stable sort by position keeps for a record with both.
    """
    nesting: list[Problem] = []
    duplicate_ids: list[Problem] = []
    first_ids: dict[str, dict[str, str]] = {"volume": {}, "node": {}}
    for address, record in indexed.items():
        kind = record.get("kind")
        parent_field = _PARENT_FIELDS.get(kind) if isinstance(kind, str) else None
        parent = record.get(parent_field) if parent_field else None
        if parent_field is not None and isinstance(parent, str):
            found = indexed.get(parent)
            if found is None or found.get("kind") != parent_field:
                text = f"{parent_field} {parent} is not recorded as a {parent_field}"
                nesting.append(Problem(positions[address], parent_field, text))

        first = first_ids.get(kind) if isinstance(kind, str) else None
        value = record.get("id")
        if first is None or not isinstance(value, str):
            continue
        if value in first:
            text = f"id {value} is also recorded by {first[value]}; each {kind} has one address"
            duplicate_ids.append(Problem(positions[address], "id", text))
        else:
            first[value] = address
    return nesting + duplicate_ids


_VALUE_CHECKS = {"volume": _volume_problems, "run": _run_problems, "node": _node_problems, "mount": _mount_problems}


def _has_type(value: Any, expected: FieldType) -> bool:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    # JSON true and false load as bool, a subclass of int: a number field rejects them.
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


def _type_name(expected: FieldType) -> str:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_TYPE_NAMES.get(item, item.__name__) for item in allowed)


def _show(value: Any) -> str:
    """Return `value` as JSON, shortened to 80 characters."""
    try:
        text = json.dumps(value)
    except ValueError:
        # A number too large for Python's int-to-text conversion limit.
        text = "a number too large to show"
    return text if len(text) <= 80 else text[:77] + "..."
