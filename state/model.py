"""The state file's model and its canonical JSON form.

The file is exactly `json.dumps(state, indent=2, sort_keys=True) + "\\n"` with the resources
sorted by address, so that a git diff shows only real changes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import StateError
from state.migrations import STATE_VERSION, Migration, read_version, upgrade
from state.records import Problem, Record, check_records

__all__ = ["STATE_VERSION", "Record", "State", "parse_state"]


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


def parse_state(text: str, origin: str, backup: Callable[[], str | None] | None = None) -> State:
    """Parse and check a state file's text; a damaged file raises StateError naming the fix.

    `backup` returns the name of the backup to restore from, or None when there is none; it is
    called only when the file is damaged.
    """

    def restore() -> str:
        name = backup() if backup is not None else None
        place = f"from git or from {name}" if name else "from git"
        return f"Restore it {place}, then run the command again."

    try:
        data = json.loads(text)
    except ValueError as error:
        # JSONDecodeError, or a number longer than Python's int conversion limit.
        where = f"{origin}:{error.lineno}:{error.colno}" if isinstance(error, json.JSONDecodeError) else origin
        problem = error.msg if isinstance(error, json.JSONDecodeError) else "a number is too long"
        raise StateError("Damaged state file", f"{where}: invalid JSON ({problem}). {restore()}") from None
    if not isinstance(data, dict):
        raise StateError("Damaged state file", f"{origin}: the top level is not a JSON object. {restore()}")

    data, migration = upgrade(data, read_version(data, origin, restore))

    lineage = data.get("lineage")
    serial = data.get("serial")
    resources = data.get("resources")
    if not isinstance(lineage, str) or not _is_uuid(lineage):
        raise StateError(
            "Damaged state file",
            f"{_at(origin, text, _LINEAGE_KEY)}: lineage {json.dumps(lineage)} is not a UUID. {restore()}",
        )
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise StateError(
            "Damaged state file",
            f"{_at(origin, text, _SERIAL_KEY)}: serial {json.dumps(serial)} is not a non-negative number. {restore()}",
        )
    if not isinstance(resources, list):
        raise StateError("Damaged state file", f"{origin}: resources is not a list. {restore()}")

    indexed, problems = check_records(resources)
    if problems:
        raise StateError("Damaged state file", _describe(problems, resources, origin, text) + "\n" + restore())
    return State(lineage, serial, indexed, STATE_VERSION, migration)


# At most this many problems are listed; a file with more is reported with their count.
_MAX_LISTED = 20


def _describe(problems: list[Problem], resources: list[Any], origin: str, text: str) -> str:
    """Return one line per problem: `file:line: resources[N] (address): what is wrong.`"""
    offsets = _record_offsets(text)
    lines = []
    for problem in problems[:_MAX_LISTED]:
        record = resources[problem.position]
        address = record.get("address") if isinstance(record, dict) else None
        subject = f" ({address})" if isinstance(address, str) else ""
        line = _line_of(text, offsets, problem)
        where = f"{origin}:{line}" if line is not None else origin
        ending = "" if problem.text.endswith(".") else "."
        lines.append(f"{where}: resources[{problem.position}]{subject}: {problem.text}{ending}")
    if len(problems) > _MAX_LISTED:
        lines.append(f"... and {len(problems) - _MAX_LISTED} more problems.")
    return "\n".join(lines)


def _line_of(text: str, offsets: list[tuple[int, dict[str, int]]] | None, problem: Problem) -> int | None:
    if offsets is None or problem.position >= len(offsets):
        return None
    start, keys = offsets[problem.position]
    offset = keys.get(problem.field, start) if problem.field is not None else start
    return text.count("\n", 0, offset) + 1


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _record_offsets(text: str) -> list[tuple[int, dict[str, int]]] | None:
    """Return each record's offset in `text`, with the offset of each of its keys.

    Called only for a damaged file whose JSON parsed, so the walk cannot fail on syntax. It
    assumes that upgrades keep the records in their order, as every upgrade so far does.
    """
    top = _object_keys(text, _skip(text, 0))
    if top is None or "resources" not in top:
        return None
    _, key_end = _DECODER.raw_decode(text, top["resources"])
    index = _value_start(text, key_end)
    if text[index] != "[":
        return None

    records = []
    index = _skip(text, index + 1)
    while text[index] != "]":
        records.append((index, _object_keys(text, index) or {}))
        _, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        if text[index] == ",":
            index = _skip(text, index + 1)
    return records


def _object_keys(text: str, index: int) -> dict[str, int] | None:
    """Map each key of the JSON object at `index` to its offset; None when no object is there."""
    if text[index] != "{":
        return None
    keys: dict[str, int] = {}
    index = _skip(text, index + 1)
    while text[index] != "}":
        key, after = _DECODER.raw_decode(text, index)
        keys[key] = index
        _, index = _DECODER.raw_decode(text, _value_start(text, after))
        index = _skip(text, index)
        if text[index] == ",":
            index = _skip(text, index + 1)
    return keys


def _value_start(text: str, after_key: int) -> int:
    """Return the offset of the value that follows a key ending at `after_key` (past the colon)."""
    return _skip(text, _skip(text, after_key) + 1)


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


_LINEAGE_KEY = '"lineage":'
_SERIAL_KEY = '"serial":'


def _at(origin: str, text: str, needle: str, occurrence: int = 1) -> str:
    """`origin:line` for the given occurrence of `needle` in the file, or `origin` alone."""
    index = -1
    for _ in range(occurrence):
        index = text.find(needle, index + 1)
        if index < 0:
            return origin
    return f"{origin}:{text.count(chr(10), 0, index) + 1}"


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
