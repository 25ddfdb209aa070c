"""State locks: who holds them, waiting with backoff, and clearing a lock by hand.

Every command that writes the state holds its lock for the whole command. The lock records its
holder (user, host, pid, command, time and a lock id) so that a command that cannot get it can
name the holder.

Two kinds of lock fit the `StateLock` interface. `FileLock` is an operating-system lock on a
file beside a local state: the kernel releases it when its process dies, so a crash never
leaves the state locked, and the next holder finds the dead holder's record and reports it. A
lease kept beside a shared state (an object next to an S3 state, for example) outlives a
crashed process; `force_unlock` is how a person clears it. On a `FileLock`, `force_unlock`
can only clear the record of a holder that has already died, because no process can take an
operating-system lock from a live one.
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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from engine.errors import LockError, StateError

log = logging.getLogger(__name__)

FILE_MODE = 0o600
# Backoff between attempts while waiting for a lock: doubles from the first to the maximum.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 1.0
# A holder records itself just after taking the lock and clears its record just before
# releasing it. A command that times out while the record is empty keeps trying for this
# long, so that it either gets the lock or can name the holder.
EMPTY_RECORD_GRACE = 0.5


def open_regular_file(path: Path, flags: int) -> int:
    """Open `path`, a regular file or none yet, without following a symbolic link.

    The lock, the journal and the state live in a folder that a pull request can change, so a
    link planted there must not redirect volplan's writes to another file.
    """
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise _not_regular(path, "a symbolic link") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise _not_regular(path, "not a regular file")
    return descriptor


def _not_regular(path: Path, kind: str) -> StateError:
    return StateError(
        "Not a regular file",
        f"{path} is {kind}; volplan writes only regular files beside the state. Remove it and run the command again.",
    )


@dataclass(frozen=True)
class LockInfo:
    """The holder of a state lock, as recorded in the lock."""

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


@dataclass(frozen=True)
class LockStatus:
    """The holder recorded in a lock, and whether a live process still holds the lock."""

    holder: LockInfo | None
    held: bool


class StateLock(Protocol):
    """The interface every kind of state lock offers to the commands."""

    def hold(self, command: str, timeout: float) -> AbstractContextManager[LockInfo | None]:
        """Hold the lock for a block, waiting up to `timeout` seconds with backoff.

        Yields the record of a previous holder that died without releasing the lock, or None.
        Raises LockError naming the holder when the wait ends without the lock.
        """

    def status(self) -> LockStatus: ...

    def force_unlock(self, lock_id: str, confirm: Callable[[LockInfo], bool]) -> LockInfo | None:
        """Clear the lock `lock_id` after `confirm` agrees; None when it does not.

        Raises LockError when the lock id does not match, when nothing is locked, or when this
        kind of lock cannot be cleared while its holder lives.
        """


def new_lock_info(command: str) -> LockInfo:
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


class FileLock:
    """An flock(2) lock on a file beside a local state, with the holder's record inside it.

    An empty lock file means the last holder ended cleanly. A record in a file whose flock is
    free means its holder died while holding the lock.
    """

    def __init__(self, path: Path, state_path: Path) -> None:
        self.path = path
        self.state_path = state_path

    @contextmanager
    def hold(self, command: str, timeout: float = 0.0) -> Iterator[LockInfo | None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = open_regular_file(self.path, os.O_RDWR | os.O_CREAT)
        try:
            self._acquire(descriptor, timeout)
            dead_holder = _read_lock_info(descriptor)
            mine = new_lock_info(command)
            _write_lock_info(descriptor, mine)
            log.info("acquired state lock %s for '%s'", mine.lock_id, command)
            if dead_holder is not None:
                log.warning("previous lock holder died: %s", dead_holder.describe())
            try:
                yield dead_holder
            finally:
                os.ftruncate(descriptor, 0)
                log.info("released state lock %s", mine.lock_id)
        finally:
            os.close(descriptor)

    def status(self) -> LockStatus:
        try:
            descriptor = open_regular_file(self.path, os.O_RDWR)
        except FileNotFoundError:
            return LockStatus(None, held=False)
        try:
            # NOTE: probing takes the flock for a moment; a command started with
            # --lock-timeout 0 in that instant fails as if the state were locked.
            held = not _try_flock(descriptor)
            if not held:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
            return LockStatus(_read_lock_info(descriptor), held)
        finally:
            os.close(descriptor)

    def force_unlock(self, lock_id: str, confirm: Callable[[LockInfo], bool]) -> LockInfo | None:
        status = self.status()
        holder = matching_holder(status, lock_id, self.state_path)
        if status.held:
            raise LockError(
                "Lock held by a running process",
                f"{holder.describe()}. {self.state_path} has an operating-system lock, which ends when its "
                f"process ends and cannot be taken from a live one. Wait for pid {holder.pid} on {holder.host} "
                "to finish, or stop it; the next command then proceeds on its own.",
            )
        if not confirm(holder):
            return None

        with self.hold("volplan force-unlock") as dead_holder:
            if dead_holder is None or dead_holder.lock_id != lock_id:
                raise LockError(
                    "Lock changed",
                    f"the lock on {self.state_path} changed while volplan asked; nothing was cleared. "
                    "Run 'volplan force-unlock' again with the lock id it shows.",
                )
        log.warning("cleared the record of dead lock holder %s", holder.describe())
        return holder

    def _acquire(self, descriptor: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = FIRST_RETRY_DELAY
        while not _try_flock(descriptor):
            if time.monotonic() >= deadline:
                self._acquire_within_grace(descriptor, timeout)
                return
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _acquire_within_grace(self, descriptor: int, timeout: float) -> None:
        grace_ends = time.monotonic() + EMPTY_RECORD_GRACE
        while _read_lock_info(descriptor) is None and time.monotonic() < grace_ends:
            if _try_flock(descriptor):
                return
            time.sleep(0.01)
        raise self._locked_error(descriptor, timeout)

    def _locked_error(self, descriptor: int, timeout: float) -> LockError:
        holder = _read_lock_info(descriptor)
        who = holder.describe() if holder else "another volplan process (it has not recorded itself yet)"
        waited = f" after waiting {timeout:g}s" if timeout else ""
        return LockError(
            "State locked",
            f"{self.state_path} is still locked{waited}: {who}. Wait for it to finish, or retry with "
            "--lock-timeout 60s to wait up to a minute.",
        )


def matching_holder(status: LockStatus, lock_id: str, state_path: str | Path) -> LockInfo:
    """Return the holder of the lock `lock_id`; raises LockError when the lock is free or another."""
    holder = status.holder
    if holder is None and status.held:
        raise LockError(
            "Lock holder unknown",
            f"{state_path} is locked by a process that has not recorded itself yet. Run the command again "
            "in a moment to see the holder and its lock id.",
        )
    if holder is None:
        raise LockError(
            "Lock not found",
            f"{state_path} is not locked, so there is no lock {lock_id} to clear.",
        )
    if holder.lock_id != lock_id:
        raise LockError(
            "Lock ID mismatch",
            f"{state_path} is locked by {holder.describe()}, not by lock {lock_id}. "
            f"Check the id; the current one is {holder.lock_id}.",
        )
    return holder


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _write_lock_info(descriptor: int, info: LockInfo) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(asdict(info), sort_keys=True) + "\n").encode(), 0)
    os.fsync(descriptor)


def _read_lock_info(descriptor: int) -> LockInfo | None:
    try:
        raw = os.pread(descriptor, 65536, 0)
        data = json.loads(raw) if raw.strip() else None
        return LockInfo(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None
