"""A state lock kept as an object beside a shared state, held by a lease that its holder renews.

The lock object is created only where none exists (a put with If-None-Match: *), so two
commands cannot both create it. It records the holder as a local lock does, and the lease.
While the command runs, a heartbeat thread rewrites the object every third of the lease, with
If-Match on the ETag it last wrote. A holder that dies stops renewing. Once its lease has run
out, the next command takes the lock over with If-Match on the expired lock's ETag, so only
one of several waiting commands wins.

Expiry is judged on the store's clock, the object's Last-Modified time plus the lease against
the Date of the store's reply, so a difference between the clocks of two machines does not
shorten or lengthen a lease.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone

from engine.errors import LockError, StateError
from state.locking import (
    FIRST_RETRY_DELAY,
    MAX_RETRY_DELAY,
    LockInfo,
    LockStatus,
    matching_holder,
    new_lock_info,
)
from state.object_store import ObjectStore, PreconditionFailed, StoredObject

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60.0
# The heartbeat renews the lease this many times per lease.
RENEWALS_PER_LEASE = 3
# Last-Modified and Date have whole-second resolution, so one more second keeps a lease from
# being judged expired early.
CLOCK_RESOLUTION = timedelta(seconds=1)
_HOLDER_FIELDS = tuple(field.name for field in fields(LockInfo))


@dataclass(frozen=True)
class Lease:
    """A lock object as read: its holder (None when unreadable), its ETag and when it expires."""

    holder: LockInfo | None
    etag: str
    expires: datetime
    expired: bool


class LeaseLock:
    """A `StateLock` whose record is the object `key` in `objects`, held by a renewed lease."""

    def __init__(
        self, objects: ObjectStore, key: str, state_name: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self.objects = objects
        self.key = key
        self.state_name = state_name
        self.lease_seconds = lease_seconds
        self._last_seen: Lease | None = None

    @contextmanager
    def hold(self, command: str, timeout: float = 0.0) -> Iterator[LockInfo | None]:
        mine = new_lock_info(command)
        etag, expired_holder = self._acquire(mine, timeout)
        log.info("acquired state lock %s for '%s' (lease %gs)", mine.lock_id, command, self.lease_seconds)
        if expired_holder is not None:
            log.warning("took over the expired lease of %s", expired_holder.describe())

        heartbeat = _Heartbeat(self, mine, etag)
        heartbeat.start()
        try:
            yield expired_holder
        finally:
            self._release(mine, heartbeat.stop())

    def status(self) -> LockStatus:
        current = self.objects.get(self.key)
        if current is None:
            return LockStatus(None, held=False)
        lease = self._read_lease(current)
        return LockStatus(lease.holder, held=not lease.expired)

    def force_unlock(self, lock_id: str, confirm: Callable[[LockInfo], bool]) -> LockInfo | None:
        current = self.objects.get(self.key)
        if current is None:
            matching_holder(LockStatus(None, held=False), lock_id, self.state_name)
            return None
        lease = self._read_lease(current)
        if lease.holder is None:
            raise LockError(
                "Lock record unreadable",
                f"{self.objects.describe(self.key)} is not a volplan lock record. If no volplan command is "
                f"running, delete that object; otherwise it expires at {_format_time(lease.expires)}.",
            )
        holder = matching_holder(LockStatus(lease.holder, held=True), lock_id, self.state_name)
        if not confirm(holder):
            return None

        try:
            self.objects.delete(self.key, if_match=lease.etag)
        except PreconditionFailed:
            raise LockError(
                "Lock changed",
                f"the lock on {self.state_name} changed while volplan asked; nothing was cleared. "
                "Run 'volplan force-unlock' again with the lock id it shows.",
            ) from None
        log.warning("force-unlocked %s: %s", self.state_name, holder.describe())
        return holder

    def _acquire(self, mine: LockInfo, timeout: float) -> tuple[str, LockInfo | None]:
        deadline = time.monotonic() + timeout
        delay = FIRST_RETRY_DELAY
        while True:
            taken = self._try_take(mine)
            if taken is not None:
                return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked_error(timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _try_take(self, mine: LockInfo) -> tuple[str, LockInfo | None] | None:
        """Create the lock object, or take over an expired one; None while another lease runs."""
        try:
            return self.objects.put(self.key, self._body(mine), if_none_match=True), None
        except PreconditionFailed:
            pass

        current = self.objects.get(self.key)
        if current is None:
            # Released between the two calls: the next attempt may create it.
            return None
        lease = self._read_lease(current)
        self._last_seen = lease
        if not lease.expired:
            return None
        try:
            return self.objects.put(self.key, self._body(mine), if_match=lease.etag), lease.holder
        except PreconditionFailed:
            # Another waiting command took it over first.
            return None

    def _release(self, mine: LockInfo, etag: str | None) -> None:
        if etag is None:
            return
        try:
            self.objects.delete(self.key, if_match=etag)
        except PreconditionFailed:
            current = self._own_lease(mine)
            if current is None:
                log.warning("state lock %s was cleared or taken over before its release", mine.lock_id)
                return
            self.objects.delete(self.key, if_match=current.etag)
        except StateError as error:
            log.warning(
                "could not release state lock %s (%s); it expires by itself after its lease of %gs",
                mine.lock_id,
                error,
                self.lease_seconds,
            )
            return
        log.info("released state lock %s", mine.lock_id)

    def _own_lease(self, mine: LockInfo) -> Lease | None:
        """Read the lock object and return it if it still records `mine`, since a retried write may have changed its ETag."""
        current = self.objects.get(self.key)
        if current is None:
            return None
        lease = self._read_lease(current)
        return lease if lease.holder is not None and lease.holder.lock_id == mine.lock_id else None

    def _body(self, mine: LockInfo) -> bytes:
        # `expires` is for people reading the object; expiry itself is judged on the store's clock.
        expires = datetime.now(timezone.utc) + timedelta(seconds=self.lease_seconds)
        record = {**asdict(mine), "lease_seconds": self.lease_seconds, "expires": _format_time(expires)}
        return (json.dumps(record, sort_keys=True) + "\n").encode()

    def _read_lease(self, current: StoredObject) -> Lease:
        holder, lease_seconds = _parse_record(current.body)
        seconds = lease_seconds if lease_seconds is not None else self.lease_seconds
        expires = current.last_modified + timedelta(seconds=seconds) + CLOCK_RESOLUTION
        now = current.server_time or datetime.now(timezone.utc)
        return Lease(holder, current.etag, expires, expired=now >= expires)

    def _locked_error(self, timeout: float) -> LockError:
        lease = self._last_seen
        if lease is not None and lease.holder is not None:
            who = lease.holder.describe()
            clear = f"'volplan force-unlock {lease.holder.lock_id}' clears it at once"
        else:
            who = "another volplan process"
            clear = "'volplan force-unlock LOCK_ID' clears it at once"
        until = f"; its lease runs until {_format_time(lease.expires)} unless renewed" if lease else ""
        waited = f" after waiting {timeout:g}s" if timeout else ""
        return LockError(
            "State locked",
            f"{self.state_name} is still locked{waited}: {who}{until}. Wait for it to finish, or retry with "
            f"--lock-timeout 60s to wait up to a minute. If its holder crashed, the lock expires by itself when "
            f"the lease runs out, and {clear}.",
        )


class _Heartbeat:
    """Renews a held lease every third of its length, until stopped or until the lock is lost."""

    def __init__(self, lock: LeaseLock, mine: LockInfo, etag: str) -> None:
        self.lock = lock
        self.mine = mine
        self.etag: str | None = etag
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="volplan-lock-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> str | None:
        """Stop renewing; return the lock object's ETag, or None when the lock was lost."""
        self._stopped.set()
        self._thread.join()
        return self.etag

    def _run(self) -> None:
        interval = self.lock.lease_seconds / RENEWALS_PER_LEASE
        while not self._stopped.wait(interval) and self.etag is not None:
            self._renew()

    def _renew(self) -> None:
        assert self.etag is not None
        try:
            self.etag = self.lock.objects.put(self.lock.key, self.lock._body(self.mine), if_match=self.etag)
            log.debug("renewed state lock %s", self.mine.lock_id)
        except PreconditionFailed:
            current = self.lock._own_lease(self.mine)
            if current is not None:
                self.etag = current.etag
                return
            # The state itself stays safe: its writes are conditional on the ETag this command read.
            log.error("lost state lock %s: it was force-unlocked or taken over", self.mine.lock_id)
            self.etag = None
        except StateError as error:
            log.warning("could not renew state lock %s (%s); retrying", self.mine.lock_id, error)


def _parse_record(body: bytes) -> tuple[LockInfo | None, float | None]:
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    lease = data.get("lease_seconds")
    lease_seconds = float(lease) if isinstance(lease, (int, float)) and not isinstance(lease, bool) else None
    try:
        holder = LockInfo(**{name: data[name] for name in _HOLDER_FIELDS})
    except KeyError:
        holder = None
    return holder, lease_seconds


def _format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
