"""Local state storage: atomic writes, a backup of the state as first read, and an OS lock.

A write goes to a temporary file in the same folder, is flushed with fsync and then renamed
over the state with `os.replace`, so a crash leaves either the old or the new file, never a
truncated one.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import logging
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import LockError, StateError
from state.model import State, parse_state

log = logging.getLogger(__name__)

FILE_MODE = 0o600


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


@dataclass
class LockInfo:
    """Who holds the state lock."""

    lock_id: str
    user: str
    host: str
    pid: int
    command: str
    created: str

    def describe(self) -> str:
        return (
            f"lock {self.lock_id} held by {self.user}@{self.host} (pid {self.pid}) "
            f"running '{self.command}' since {self.created}"
        )


class LocalStateStore:
    """A state file on the local file system, with its lock, backup and journal beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup_path = path.with_name(path.name + ".backup")
        self.lock_path = path.with_name(path.name + ".lock")
        self.journal_path = path.with_name(path.name + ".journal")
        self.errored_path = path.with_name("errored." + path.name)
        self._first_read_text: str | None = None
        self._backup_written = False

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> State | None:
        """Read the state, or None when there is none yet. Remembers the text for the backup."""
        text = self.read_text()
        if text is None:
            return None
        if self._first_read_text is None:
            self._first_read_text = text
        return parse_state(text, str(self.path))

    def read_text(self) -> str | None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            raise StateError(
                "State file is not a regular file",
                f"{self.path} is a {'symbolic link' if stat.S_ISLNK(info.st_mode) else 'special file'}; "
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
        """Write the state atomically, first saving the state as this command first read it."""
        if not self._backup_written and self._first_read_text is not None:
            write_file_atomically(self.backup_path, self._first_read_text)
            self._backup_written = True
        write_file_atomically(self.path, state.to_text())
        log.info("wrote state %s (serial %d, %d resources)", self.path, state.serial, len(state.resources))

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

    @contextmanager
    def lock(self, command: str, timeout: float = 0.0) -> Iterator[LockInfo | None]:
        """Hold the state lock for the block; yields what a dead previous holder left, if anything."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            self._acquire(descriptor, timeout)
            stale = _read_lock_info(descriptor)
            _write_lock_info(descriptor, _new_lock_info(command))
            if stale is not None:
                log.warning("previous lock holder died: %s", stale.describe())
            try:
                yield stale
            finally:
                # An empty lock file tells the next holder that this one ended cleanly.
                os.ftruncate(descriptor, 0)
        finally:
            os.close(descriptor)

    def _acquire(self, descriptor: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                holder = _read_lock_info(descriptor)
                who = holder.describe() if holder else "another volplan process"
                raise LockError(
                    "State locked",
                    f"{self.path} is locked: {who}. Wait for it to finish, or retry with "
                    "--lock-timeout 60s to wait up to a minute.",
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)


def _new_lock_info(command: str) -> LockInfo:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return LockInfo(
        lock_id=str(uuid.uuid4()),
        user=user,
        host=socket.gethostname(),
        pid=os.getpid(),
        command=command,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _write_lock_info(descriptor: int, info: LockInfo) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(info.__dict__, sort_keys=True) + "\n").encode(), 0)


def _read_lock_info(descriptor: int) -> LockInfo | None:
    try:
        raw = os.pread(descriptor, 65536, 0)
        data = json.loads(raw) if raw.strip() else None
        return LockInfo(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None
