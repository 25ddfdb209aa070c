"""Local state storage: atomic writes, a backup of the state as first read, and an OS lock.

A write goes to a temporary file in the same folder, is flushed with fsync and then renamed
over the state with `os.replace`, so a crash leaves either the old or the new file, never a
truncated one.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import StateError
from state.locking import FILE_MODE, FileLock, LockInfo
from state.migrations import Migration
from state.model import State, parse_state

log = logging.getLogger(__name__)

__all__ = ["FILE_MODE", "LocalStateStore", "fsync_directory", "write_file_atomically"]


def write_file_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new content, never a mix."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
        state = parse_state(text, str(self.path))
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
            raise StateError(
                "Damaged state file",
                f"{self.path} is not UTF-8 text. Restore it from git or from {self.backup_path}.",
            ) from None

    def write(self, state: State) -> None:
        """Write the state atomically, first saving the state as this command first read it.

        When reading upgraded the state, the file as read is also kept in a dated backup that
        later commands never overwrite.
        """
        if not self._backup_written and self._first_read_text is not None:
            if self._first_read_migration is not None:
                self._write_upgrade_backup(self._first_read_migration, self._first_read_text)
            write_file_atomically(self.backup_path, self._first_read_text)
            self._backup_written = True
        write_file_atomically(self.path, state.to_text())
        log.info("wrote state %s (serial %d, %d resources)", self.path, state.serial, len(state.resources))

    def _write_upgrade_backup(self, migration: Migration, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = self.path.with_name(f"{self.path.name}.v{migration.from_version}-{stamp}.backup")
        write_file_atomically(path, text)
        log.info("kept the state as read (version %d) in %s before upgrading it", migration.from_version, path)

    def write_errored(self, state: State) -> Path:
        """Save a state that could not be written to its place, for the user to put back."""
        write_file_atomically(self.errored_path, state.to_text())
        return self.errored_path

    def lock(self, command: str, timeout: float = 0.0) -> AbstractContextManager[LockInfo | None]:
        """Hold the state lock for a block; yields the record of a dead previous holder, if any."""
        return self.state_lock.hold(command, timeout)
