"""Local state storage: atomic writes, a backup of the state as first read, an OS lock and the journal.

A write goes to a temporary file in the same folder, is flushed with fsync and then renamed
over the state with `os.replace`, so a crash leaves either the old or the new file, never a
truncated one.
"""

from __future__ import annotations

import logging
import os
import stat
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import StateError
from state.files import FILE_MODE, fsync_directory, write_file_atomically
from state.journal import Intent, Journal, JournalContents, keep_only_intents, read_journal
from state.locking import FileLock, LockInfo
from state.migrations import Migration
from state.model import State, parse_state

log = logging.getLogger(__name__)

__all__ = ["FILE_MODE", "LocalStateStore", "fsync_directory", "write_file_atomically"]


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "folder" if stat.S_ISDIR(mode) else "special file"


class LocalStateStore:
    """A state file on the local file system, with its lock, backup and journal beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup_path = path.with_name(path.name + ".backup")
        self.lock_path = path.with_name(path.name + ".lock")
        self.journal_path = path.with_name(path.name + ".journal")
        self.errored_path = path.with_name("errored." + path.name)
        self.state_lock = FileLock(self.lock_path, path)
        self._first_read_text: str | None = None
        self._first_read_migration: Migration | None = None
        self._backup_written = False

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> State | None:
        """Read the state, or None when there is none yet. Remembers the text for the backup."""
        text = self.read_text()
        if text is None:
            return None
        state = parse_state(text, str(self.path), self._existing_backup)
        if self._first_read_text is None:
            self._first_read_text = text
            self._first_read_migration = state.migration
        return state

    def read_text(self) -> str | None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StateError("State file unreadable", f"{self.path}: {error.strerror}.") from None
        if not stat.S_ISREG(info.st_mode):
            raise StateError(
                "State file is not a regular file",
                f"{self.path} is a {_file_kind(info.st_mode)}; "
                "volplan reads and writes only a regular file there. Replace it with the state file itself.",
            )
        try:
            raw = self.path.read_bytes()
        except OSError as error:
            raise StateError("State file unreadable", f"{self.path}: {error.strerror}.") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            backup = self._existing_backup()
            place = f"from git or from {backup}" if backup else "from git"
            raise StateError("Damaged state file", f"{self.path} is not UTF-8 text. Restore it {place}.") from None

    def _existing_backup(self) -> str | None:
        return str(self.backup_path) if self.backup_path.is_file() else None

    def write(self, state: State) -> None:
        """Write the state atomically, first saving the state as this command first read it.

        When reading upgraded the state, the file as read is also kept in a dated backup that
        later commands never overwrite.
        """
        self.write_text(state.to_text())
        log.info("wrote state %s (serial %d, %d resources)", self.path, state.serial, len(state.resources))

    def write_text(self, text: str) -> None:
        """Replace the state file with `text` exactly, after the same backups as `write`."""
        if not self._backup_written and self._first_read_text is not None:
            if self._first_read_migration is not None:
                self._write_upgrade_backup(self._first_read_migration, self._first_read_text)
            write_file_atomically(self.backup_path, self._first_read_text)
            self._backup_written = True
        write_file_atomically(self.path, text)

    def _write_upgrade_backup(self, migration: Migration, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = self.path.with_name(f"{self.path.name}.v{migration.from_version}-{stamp}.backup")
        write_file_atomically(path, text)
        log.info("kept the state as read (version %d) in %s before upgrading it", migration.from_version, path)

    def remove_stale_temporaries(self) -> int:
        """Remove the temporary files of state writes that a killed process left; return how many.

        Only the holder of the state lock writes these files, so the caller must hold the lock.
        """
        prefixes = tuple(f".{path.name}.tmp-" for path in (self.path, self.backup_path, self.errored_path))
        removed = 0
        for temporary in self.path.parent.iterdir():
            if temporary.name.startswith(prefixes) and not temporary.is_dir():
                temporary.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d temporary files of interrupted state writes beside %s", removed, self.path)
        return removed

    def write_errored(self, state: State) -> Path:
        """Save a state that could not be written to its place, for the user to put back."""
        write_file_atomically(self.errored_path, state.to_text())
        return self.errored_path

    def lock(self, command: str, timeout: float = 0.0) -> AbstractContextManager[LockInfo | None]:
        """Hold the state lock for a block; yields the record of a dead previous holder, if any."""
        return self.state_lock.hold(command, timeout)

    def read_journal(self) -> JournalContents | None:
        return read_journal(self.journal_path)

    def open_journal(self, lineage: str) -> Journal:
        return Journal(self.journal_path, lineage)

    def remove_journal(self) -> None:
        self.journal_path.unlink(missing_ok=True)
        fsync_directory(self.journal_path.parent)

    def keep_journal_intents(self, lineage: str, intents: list[Intent]) -> None:
        keep_only_intents(self.journal_path, lineage, intents)

    def describe_journal(self) -> str:
        return str(self.journal_path)
