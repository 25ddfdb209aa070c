"""What the commands need from a state store, whichever place keeps the state.

`LocalStateStore` keeps the state in a file, `S3StateStore` in an S3 object. Both keep the
backup, the lock and the write-ahead journal beside the state.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from engine.errors import StateError
from state.journal import Intent, JournalContents
from state.locking import LockInfo, StateLock
from state.model import Record, State


class StateWriteError(StateError):
    """A write that left the stored state as it was, such as one rejected because the state
    changed since it was read."""


class JournalWriter(Protocol):
    """An open journal that the executor appends to from several threads."""

    def intent(self, address: str, action: str, token: str, record: Record | None) -> int:
        """Record a call about to be made; return the sequence number its `done` entry refers to."""

    def done(self, seq: int | None, address: str, record: Record | None) -> None:
        """Record the resource as a call left it, or its removal when `record` is None."""

    def open_intents(self) -> list[Intent]:
        """Intents of this session without a `done` entry: calls that failed or never returned."""

    def close(self) -> None: ...


class StateStore(Protocol):
    """A place that keeps one state, its backup, its lock and its journal."""

    @property
    def state_lock(self) -> StateLock: ...

    def describe(self) -> str:
        """Name the state for people: a path or an s3:// URL."""

    def read(self) -> State | None:
        """Read and check the state, or return None when there is none yet."""

    def read_text(self) -> str | None:
        """Read the state's text exactly as stored, or return None when there is none yet."""

    def write(self, state: State) -> None:
        """Replace the state, first keeping the state as this command first read it as the backup."""

    def write_text(self, text: str) -> None:
        """Replace the state with `text` byte for byte, keeping the same backup as `write`."""

    def write_errored(self, state: State) -> Path:
        """Save a state that could not be written to its place to a local file, for people to put back."""

    def lock(self, command: str, timeout: float = 0.0) -> AbstractContextManager[LockInfo | None]:
        """Hold the state lock for a block; yields the record of a previous holder that died, if any."""

    def read_journal(self) -> JournalContents | None:
        """Read the journal an earlier command left, or return None when there is none."""

    def open_journal(self, lineage: str) -> JournalWriter:
        """Open the journal for appending, writing its `begin` entry."""

    def remove_journal(self) -> None:
        """Remove the journal once the state holds everything it recorded."""

    def keep_journal_intents(self, lineage: str, intents: list[Intent]) -> None:
        """Replace the journal with just `intents`, whose outcome is still unknown."""

    def describe_journal(self) -> str:
        """Name the journal for people: a path or an s3:// prefix."""

    def remove_stale_temporaries(self) -> int:
        """Remove what killed writes of the state left; return how many. The caller holds the lock."""
