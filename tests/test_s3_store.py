"""The S3 state store against moto's server: conditional writes, the lease lock and the journal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.errors import LockError
from state.lease_lock import LeaseLock
from state.locking import new_lock_info
from state.model import State
from state.object_store import PreconditionFailed
from state.s3_location import S3Location
from state.s3_store import S3Objects, S3StateStore, open_s3_store
from state.storage import StateWriteError
from tests.s3_server import S3

KEY = "prod/volplan.state.json"


def _store(s3: S3, tmp_path: Path, lease: float = 60.0) -> S3StateStore:
    return open_s3_store(S3Location(s3.bucket, KEY, endpoint_url=s3.endpoint), tmp_path, lease)


def _objects(s3: S3) -> S3Objects:
    return _store(s3, Path("/nonexistent")).objects


def test_moto_rejects_failed_conditions(s3: S3) -> None:
    objects = _objects(s3)
    first = objects.put("k", b"one", if_none_match=True)

    with pytest.raises(PreconditionFailed):
        objects.put("k", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("k", b"two", if_match='"0123456789abcdef0123456789abcdef"')
    with pytest.raises(PreconditionFailed):
        objects.put("missing", b"two", if_match=first)
    with pytest.raises(PreconditionFailed):
        objects.delete("k", if_match='"0123456789abcdef0123456789abcdef"')
    assert s3.body("k") == b"one"

    second = objects.put("k", b"two", if_match=first)
    assert s3.body("k") == b"two"
    objects.delete("k", if_match=second)
    assert s3.keys() == []


def test_concurrent_creates_one_wins(s3: S3) -> None:
    objects = _objects(s3)
    start = threading.Barrier(8)
    winners: list[int] = []

    def create(number: int) -> None:
        start.wait()
        try:
            objects.put("lock", str(number).encode(), if_none_match=True)
        except PreconditionFailed:
            return
        winners.append(number)

    threads = [threading.Thread(target=create, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(winners) == 1
    assert s3.body("lock") == str(winners[0]).encode()


def test_stale_etag_writer_rejected(s3: S3, tmp_path: Path) -> None:
    seed = _store(s3, tmp_path)
    seed.read()
    seed.write(State.new())
    slow, fast = _store(s3, tmp_path), _store(s3, tmp_path)
    slow_state, fast_state = slow.read(), fast.read()
    assert slow_state is not None and fast_state is not None
    fast_state.serial += 1
    fast.write(fast_state)
    written = s3.body(KEY)

    slow_state.serial += 5
    with pytest.raises(StateWriteError) as raised:
        slow.write(slow_state)

    assert raised.value.title == "State changed since it was read"
    assert s3.url(KEY) in raised.value.detail
    assert "nothing was overwritten" in raised.value.detail
    assert s3.body(KEY) == written


def test_first_write_rejected_when_state_appeared(s3: S3, tmp_path: Path) -> None:
    late, early = _store(s3, tmp_path), _store(s3, tmp_path)
    assert late.read() is None
    assert early.read() is None
    early.write(State.new())
    written = s3.body(KEY)

    with pytest.raises(StateWriteError, match="State changed since it was read"):
        late.write(State.new())
    assert s3.body(KEY) == written


def test_write_keeps_first_read_as_backup(s3: S3, tmp_path: Path) -> None:
    seed = _store(s3, tmp_path)
    seed.read()
    seed.write(State.new())
    first = s3.body(KEY)
    store = _store(s3, tmp_path)
    state = store.read()
    assert state is not None

    for _ in range(2):
        state.serial += 1
        store.write(state)

    assert s3.body(f"{KEY}.backup") == first
    assert b'"serial": 2' in s3.body(KEY)


def test_lock_refuses_second_holder(s3: S3, tmp_path: Path) -> None:
    holder, waiter = _store(s3, tmp_path), _store(s3, tmp_path)

    with holder.lock("volplan apply"), pytest.raises(LockError) as raised:
        waiter.lock("volplan apply", timeout=0.2).__enter__()

    assert raised.value.title == "State locked"
    assert "still locked after waiting 0.2s" in raised.value.detail
    assert "running 'volplan apply'" in raised.value.detail
    assert s3.keys(f"{KEY}.lock") == []
    with waiter.lock("volplan apply") as expired_holder:
        assert expired_holder is None


def test_expired_lease_taken_over(s3: S3, tmp_path: Path) -> None:
    objects = _objects(s3)
    crashed = LeaseLock(objects, f"{KEY}.lock", s3.url(KEY), lease_seconds=3)
    # A crashed holder leaves its record behind, and no heartbeat renews it.
    mine = new_lock_info("volplan apply")
    objects.put(f"{KEY}.lock", crashed._body(mine), if_none_match=True)
    assert crashed.status().held

    with LeaseLock(objects, f"{KEY}.lock", s3.url(KEY)).hold("volplan apply", timeout=30) as expired_holder:
        assert expired_holder == mine
    assert s3.keys(f"{KEY}.lock") == []


def test_journal_entries_fold_in_order(s3: S3, tmp_path: Path) -> None:
    store = _store(s3, tmp_path)
    journal = store.open_journal("6f1c2a0e-3d4b-4c5d-9e8f-0a1b2c3d4e5f")
    seq = journal.intent("volume.data", "create", "token-1", {"address": "volume.data", "id": ""})
    journal.done(seq, "volume.data", {"address": "volume.data", "id": "vol-1"})
    journal.done(None, "volume.old", None)
    pending = journal.intent("volume.next", "create", "token-2", {"address": "volume.next"})
    journal.close()

    contents = store.read_journal()

    assert contents is not None
    assert contents.lineage == "6f1c2a0e-3d4b-4c5d-9e8f-0a1b2c3d4e5f"
    assert contents.results == [("volume.data", {"address": "volume.data", "id": "vol-1"}), ("volume.old", None)]
    assert [(intent.seq, intent.token) for intent in contents.pending] == [(pending, "token-2")]
    assert len(s3.keys(f"{KEY}.journal/")) == 5
    store.remove_journal()
    assert s3.keys(f"{KEY}.journal/") == []
    assert store.read_journal() is None
