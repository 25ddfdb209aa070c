"""The write-ahead journal: an append-only record of in-flight and finished provider calls.

Before a call that creates or destroys something, an `intent` line records the address, the
action and the idempotency token. When the call returns, a `done` line records the resource as
it now is (or its removal). Each line is flushed with fsync before anything depends on it, so
a step is durable at a cost that does not grow with the state. At the end of an apply the
journal is folded into the state file and removed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.actions import Action
from engine.errors import StateError
from state.locking import open_regular_file
from state.model import Record, State
from state.store import fsync_directory

log = logging.getLogger(__name__)

_OPERATIONS = ("begin", "intent", "done")
# Only calls that create or destroy something write an intent first.
_JOURNALED_ACTIONS = (Action.CREATE.value, Action.DELETE.value)
_MOVE_AWAY = (
    "Move the journal away (the state file itself is intact), then run 'volplan drift' to compare "
    "the state with the providers."
)


@dataclass
class Intent:
    seq: int
    address: str
    action: str
    token: str
    time: str
    record: Record | None = None


@dataclass
class JournalContents:
    lineage: str | None
    results: list[tuple[str, Record | None]] = field(default_factory=list)
    pending: list[Intent] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.results and not self.pending


def read_journal(path: Path) -> JournalContents | None:
    """Read a journal left by an earlier command, or None when there is none.

    A torn last line (a crash during the write) is ignored: its step never reported done.
    """
    try:
        descriptor = open_regular_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        raw = handle.read()

    contents = JournalContents(lineage=None)
    intents: dict[int, Intent] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("ignoring unreadable journal line %d of %s", number, path)
            continue
        try:
            _read_entry(entry, contents, intents, path, number)
        except (KeyError, TypeError):
            raise StateError(
                "Damaged journal",
                f"{path}:{number} is missing fields. Restore the journal from a backup, or move it away "
                "and run 'volplan plan' to compare the state with the provider.",
            ) from None

    contents.pending = sorted(intents.values(), key=lambda intent: intent.seq)
    return contents


def _read_entry(entry: Any, contents: JournalContents, intents: dict[int, Intent], path: Path, number: int) -> None:
    if not isinstance(entry, dict):
        raise StateError("Damaged journal", f"{path}:{number} is not a JSON object. {_MOVE_AWAY}")
    kind = entry.get("op")
    if kind not in _OPERATIONS:
        raise StateError(
            "Damaged journal",
            f"{path}:{number}: unknown op {json.dumps(kind)}, expected one of {', '.join(_OPERATIONS)}. {_MOVE_AWAY}",
        )
    if kind == "intent" and entry.get("action") not in _JOURNALED_ACTIONS:
        raise StateError(
            "Damaged journal",
            f"{path}:{number}: unknown action {json.dumps(entry.get('action'))}, expected one of "
            f"{', '.join(_JOURNALED_ACTIONS)}. {_MOVE_AWAY}",
        )
    if kind == "begin":
        contents.lineage = entry.get("lineage")
    elif kind == "intent":
        intents[entry["seq"]] = Intent(
            entry["seq"], entry["address"], entry["action"], entry["token"], entry["time"], entry.get("record")
        )
    elif kind == "done":
        intents.pop(entry.get("seq", -1), None)
        contents.results.append((entry["address"], entry.get("record")))


def fold_results(state: State, results: list[tuple[str, Record | None]]) -> State:
    """Return a copy of `state` with journal results applied in order."""
    folded = state.copy()
    for address, record in results:
        if record is None:
            folded.resources.pop(address, None)
        else:
            folded.resources[address] = record
    return folded


class Journal:
    """An open journal that the executor appends to from several threads."""

    def __init__(self, path: Path, lineage: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seq = 0
        existed = path.exists()
        self._descriptor = open_regular_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        if not existed:
            fsync_directory(path.parent)
        self._append({"op": "begin", "lineage": lineage, "time": _now()})

    def intent(self, address: str, action: str, token: str, record: Record | None) -> int:
        """Record a call about to be made; `record` is what the resource will be if it succeeds."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        entry = {
            "op": "intent",
            "seq": seq,
            "address": address,
            "action": action,
            "token": token,
            "record": record,
            "time": _now(),
        }
        self._append(entry)
        return seq

    def done(self, seq: int | None, address: str, record: Record | None) -> None:
        self._append({"op": "done", "seq": seq if seq is not None else -1, "address": address, "record": record})

    def _append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._descriptor, line)
            os.fsync(self._descriptor)

    def close(self) -> None:
        os.close(self._descriptor)

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        fsync_directory(self.path.parent)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
