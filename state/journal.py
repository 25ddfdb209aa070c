"""The write-ahead journal: an append-only record of in-flight and finished provider calls.

Before a call that creates or destroys something, an `intent` entry records the address, the
action and the idempotency token. When the call returns, a `done` entry records the resource as
it now is (or its removal). Each entry is made durable before anything depends on it, so a step
is recorded at a cost that does not grow with the state. At the end of an apply the journal is
folded into the state and removed, except for intents whose outcome is still unknown: those
stay for the next command to look up by token.

The local journal is one file with one JSON line per entry; the S3 journal keeps one object per
entry (state/object_journal.py). Both are read by `parse_journal`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.actions import Action
from engine.errors import StateError
from state.files import fsync_directory, write_file_atomically
from state.locking import open_regular_file
from state.model import Record, State

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
    """Read a journal file left by an earlier command, or None when there is none."""
    try:
        descriptor = open_regular_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        raw = handle.read()
    return parse_journal((f"{path}:{number}", line) for number, line in enumerate(raw.split(b"\n"), start=1))


def parse_journal(entries: Iterable[tuple[str, bytes]]) -> JournalContents:
    """Fold journal entries, in the order they were written, into results and pending intents.

    Each entry comes with the place it was read from (`file:line`, or an object's URL), for
    error messages. An entry that is not JSON is skipped with a warning: it can only be the
    torn last write of a crash, whose step never reported done.
    """
    contents = JournalContents(lineage=None)
    # Sequence numbers restart with each `begin` entry, so intents are keyed by (session, seq).
    intents: dict[tuple[int, int], Intent] = {}
    session = 0
    for where, line in entries:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("ignoring unreadable journal entry %s", where)
            continue
        try:
            session = _read_entry(entry, contents, intents, session, where)
        except (KeyError, TypeError):
            raise StateError(
                "Damaged journal",
                f"{where} is missing fields. Restore the journal from a backup, or move it away "
                "and run 'volplan plan' to compare the state with the provider.",
            ) from None

    contents.pending = [intents[key] for key in sorted(intents)]
    return contents


def _read_entry(
    entry: Any, contents: JournalContents, intents: dict[tuple[int, int], Intent], session: int, where: str
) -> int:
    """Apply one journal entry to `contents`; return the session number the next entry belongs to."""
    if not isinstance(entry, dict):
        raise StateError("Damaged journal", f"{where} is not a JSON object. {_MOVE_AWAY}")
    kind = entry.get("op")
    if kind not in _OPERATIONS:
        raise StateError(
            "Damaged journal",
            f"{where}: unknown op {json.dumps(kind)}, expected one of {', '.join(_OPERATIONS)}. {_MOVE_AWAY}",
        )
    if kind == "intent" and entry.get("action") not in _JOURNALED_ACTIONS:
        raise StateError(
            "Damaged journal",
            f"{where}: unknown action {json.dumps(entry.get('action'))}, expected one of "
            f"{', '.join(_JOURNALED_ACTIONS)}. {_MOVE_AWAY}",
        )
    if kind == "begin":
        contents.lineage = entry.get("lineage")
        return session + 1
    if kind == "intent":
        intents[(session, entry["seq"])] = Intent(
            entry["seq"], entry["address"], entry["action"], entry["token"], entry["time"], entry.get("record")
        )
    elif kind == "done":
        intents.pop((session, entry.get("seq", -1)), None)
        contents.results.append((entry["address"], entry.get("record")))
    return session


def fold_results(state: State, results: list[tuple[str, Record | None]]) -> State:
    """Return a copy of `state` with journal results applied in order.

    A volume id that a result records at one address and an untouched record keeps at another
    is a rename under `moved:` that stopped before it dropped the old address. The old address
    is dropped here, so that the state never records one volume twice.
    """
    folded = state.copy()
    for address, record in results:
        if record is None:
            folded.resources.pop(address, None)
        else:
            folded.resources[address] = record

    written = {address for address, _ in results}
    moved_ids = {
        record["id"]: address
        for address, record in folded.resources.items()
        if address in written and record.get("kind") == "volume" and record.get("id")
    }
    for address, record in list(folded.resources.items()):
        new_address = moved_ids.get(record.get("id")) if record.get("kind") == "volume" else None
        if new_address is not None and address not in written:
            log.info("dropped %s: its volume %s is now recorded at %s", address, record["id"], new_address)
            del folded.resources[address]
    return folded


def begin_entry(lineage: str) -> dict[str, Any]:
    return {"op": "begin", "lineage": lineage, "time": _now()}


def intent_entry(intent: Intent) -> dict[str, Any]:
    return {
        "op": "intent",
        "seq": intent.seq,
        "address": intent.address,
        "action": intent.action,
        "token": intent.token,
        "record": intent.record,
        "time": intent.time,
    }


def done_entry(seq: int | None, address: str, record: Record | None) -> dict[str, Any]:
    return {"op": "done", "seq": seq if seq is not None else -1, "address": address, "record": record}


def encode_entry(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()


def keep_only_intents(path: Path, lineage: str, intents: list[Intent]) -> None:
    """Replace a journal file with just `intents`, once every result it held is in the state.

    These are calls whose outcome is unknown (a create that raised may still have made its
    volume), so the next command looks them up again by token.
    """
    entries = [begin_entry(lineage)] + [intent_entry(intent) for intent in intents]
    write_file_atomically(path, "".join(encode_entry(entry).decode() for entry in entries))


class IntentTracker:
    """The intents of one journal session that have no `done` entry yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._open: dict[int, Intent] = {}

    def new(self, address: str, action: str, token: str, record: Record | None) -> Intent:
        with self._lock:
            self._seq += 1
            intent = Intent(self._seq, address, action, token, _now(), record)
            self._open[intent.seq] = intent
        return intent

    def close(self, seq: int | None) -> None:
        with self._lock:
            self._open.pop(seq if seq is not None else -1, None)

    def open_intents(self) -> list[Intent]:
        """Intents of this session without a `done` entry: calls that failed or never returned."""
        with self._lock:
            return [self._open[seq] for seq in sorted(self._open)]


class Journal:
    """An open journal file that the executor appends to from several threads."""

    def __init__(self, path: Path, lineage: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Group commit: entries are counted as they are written, and one fsync makes every
        # entry written before it started durable, so threads that append at once share it.
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0
        self._intents = IntentTracker()
        existed = path.exists()
        self._descriptor = open_regular_file(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        if not existed:
            fsync_directory(path.parent)
        self._end_torn_line()
        self._append(begin_entry(lineage))

    def _end_torn_line(self) -> None:
        """Terminate a last line that a killed writer left without its newline.

        Without this, the next entry would be glued to the torn one and be unreadable too.
        """
        size = os.fstat(self._descriptor).st_size
        if size and os.pread(self._descriptor, 1, size - 1) != b"\n":
            os.write(self._descriptor, b"\n")

    def intent(self, address: str, action: str, token: str, record: Record | None) -> int:
        """Record a call about to be made; `record` is what the resource will be if it succeeds."""
        intent = self._intents.new(address, action, token, record)
        self._append(intent_entry(intent))
        return intent.seq

    def done(self, seq: int | None, address: str, record: Record | None) -> None:
        self._append(done_entry(seq, address, record))
        self._intents.close(seq)

    def open_intents(self) -> list[Intent]:
        return self._intents.open_intents()

    def _append(self, entry: dict[str, Any]) -> None:
        """Write one entry and return once it is durable."""
        line = encode_entry(entry)
        with self._lock:
            os.write(self._descriptor, line)
            self._written += 1
            mine = self._written

        with self._sync_lock:
            if self._synced >= mine:
                return  # an fsync that started after this write has finished
            with self._lock:
                covered = self._written
            os.fsync(self._descriptor)
            self._synced = covered

    def close(self) -> None:
        os.close(self._descriptor)

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        fsync_directory(self.path.parent)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
