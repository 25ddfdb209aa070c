"""The write-ahead journal of a shared state, kept as one small object per entry.

An object store cannot append to an object. So each entry that the local journal appends as a
line is written here as its own object under the journal's prefix. The object's name is the
session and a number taken in the order the entries are written. Writing an entry costs one small put
whatever the size of the state. Reading lists the prefix and folds the entries in key order,
which is the order they were written. The entries are the same JSON as the lines of the local
journal (see state/journal.py).
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from state.journal import (
    Intent,
    IntentTracker,
    JournalContents,
    begin_entry,
    done_entry,
    encode_entry,
    intent_entry,
    parse_journal,
)
from state.model import Record
from state.object_store import ObjectStore

log = logging.getLogger(__name__)

# Entries are read in parallel on recovery, so that a long journal costs few round trips.
READ_THREADS = 8


class ObjectJournal:
    """An open journal that the executor appends to from several threads, one object per entry."""

    def __init__(self, objects: ObjectStore, prefix: str, lineage: str) -> None:
        self.objects = objects
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        # A session sorts after the sessions that earlier commands left under the same prefix.
        self.session_prefix = f"{prefix}{stamp}-{uuid.uuid4().hex[:8]}/"
        self._lock = threading.Lock()
        self._intents = IntentTracker()
        self._count = 0
        self._put(begin_entry(lineage))

    def intent(self, address: str, action: str, token: str, record: Record | None) -> int:
        """Record a call about to be made; `record` is what the resource will be if it succeeds."""
        intent = self._intents.new(address, action, token, record)
        self._put(intent_entry(intent))
        return intent.seq

    def done(self, seq: int | None, address: str, record: Record | None) -> None:
        self._put(done_entry(seq, address, record))
        self._intents.close(seq)

    def open_intents(self) -> list[Intent]:
        return self._intents.open_intents()

    def add_intents(self, intents: list[Intent]) -> None:
        """Write intents carried over from an earlier session, keeping their tokens."""
        for intent in intents:
            self._put(intent_entry(intent))

    def close(self) -> None:
        """Nothing to release: every entry was complete once its put returned."""

    def _put(self, entry: dict[str, Any]) -> None:
        # The number is taken before the put, so that an entry written after another one
        # returned always sorts after it, whichever put the store finishes first.
        with self._lock:
            self._count += 1
            key = f"{self.session_prefix}{self._count:010d}.json"
        self.objects.put(key, encode_entry(entry), if_none_match=True)
        log.debug("journal entry %s written", key)


def read_object_journal(objects: ObjectStore, prefix: str) -> JournalContents | None:
    """Read the journal under `prefix`, or None when there is none."""
    keys = objects.list_keys(prefix)
    if not keys:
        return None
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        found = list(pool.map(objects.get, keys))
    entries = [(objects.describe(item.key), item.body) for item in found if item is not None]
    return parse_journal(entries)


def remove_object_journal(objects: ObjectStore, prefix: str) -> None:
    keys = objects.list_keys(prefix)
    if keys:
        objects.delete_keys(keys)
        log.info("removed %d journal entries under %s", len(keys), objects.describe(prefix))
