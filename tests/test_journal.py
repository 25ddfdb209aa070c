"""The journal's file format under crashes: torn lines, restarted sessions, kept intents."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from state.journal import Journal, keep_only_intents, read_journal

LINEAGE = "8f0e8a4e-6a57-4d1f-9a35-2f5f0b6f3c11"
RECORD = {"address": "volume.data", "kind": "volume", "provider": "local", "backend": "aws"}


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path, LINEAGE)
    journal.intent("volume.data", "create", "token-1", RECORD)
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"op":"done","seq":1,"addr')

    contents = read_journal(path)

    assert contents is not None
    assert [intent.token for intent in contents.pending] == ["token-1"]
    assert contents.results == []


def test_reopened_journal_ends_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b'{"op":"intent","seq":9')

    journal = Journal(path, LINEAGE)
    seq = journal.intent("volume.data", "create", "token-2", RECORD)
    journal.done(seq, "volume.data", {**RECORD, "id": "vol-0123456789abcdef0"})
    journal.close()

    contents = read_journal(path)
    assert contents is not None
    assert contents.lineage == LINEAGE
    assert contents.results == [("volume.data", {**RECORD, "id": "vol-0123456789abcdef0"})]
    assert contents.pending == []


def test_sessions_keep_their_own_sequence(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    first = Journal(path, LINEAGE)
    first.intent("volume.a", "create", "token-a", RECORD)
    first.close()
    second = Journal(path, LINEAGE)
    seq = second.intent("volume.b", "create", "token-b", RECORD)
    second.done(seq, "volume.b", None)
    second.close()

    contents = read_journal(path)

    assert contents is not None
    assert seq == 1
    assert [intent.token for intent in contents.pending] == ["token-a"]


def test_open_intents_lists_calls_without_result(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", LINEAGE)
    finished = journal.intent("volume.a", "create", "token-a", RECORD)
    journal.intent("volume.b", "delete", "vol-0123456789abcdef0", None)
    journal.done(finished, "volume.a", RECORD)

    assert [intent.address for intent in journal.open_intents()] == ["volume.b"]
    journal.close()


def test_keep_only_intents_drops_results(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path, LINEAGE)
    finished = journal.intent("volume.a", "create", "token-a", RECORD)
    journal.done(finished, "volume.a", RECORD)
    journal.intent("volume.b", "create", "token-b", RECORD)
    kept = journal.open_intents()
    journal.close()

    keep_only_intents(path, LINEAGE, kept)

    contents = read_journal(path)
    assert contents is not None
    assert contents.lineage == LINEAGE
    assert contents.results == []
    assert [(intent.address, intent.token, intent.record) for intent in contents.pending] == [
        ("volume.b", "token-b", RECORD)
    ]


def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real fsync runs. The wrapper records the file size each call covers and adds 5 ms,
    # as on a slow disk, so that appends from several threads overlap.
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(descriptor: int) -> None:
        synced_sizes.append(os.fstat(descriptor).st_size)
        time.sleep(0.005)
        real_fsync(descriptor)

    path = tmp_path / "journal"
    journal = Journal(path, LINEAGE)
    monkeypatch.setattr(os, "fsync", slow_fsync)
    durable_sizes: list[int] = []
    sizes_lock = threading.Lock()

    def append_many(thread: int) -> None:
        for index in range(25):
            address = f"volume.t{thread}-{index}"
            seq = journal.intent(address, "create", f"token-{thread}-{index}", RECORD)
            written = path.stat().st_size
            journal.done(seq, address, {**RECORD, "address": address})
            # done() returned, so an fsync that started after its entry was written has ended.
            with sizes_lock:
                durable_sizes.append(written)

    threads = [threading.Thread(target=append_many, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    journal.close()

    contents = read_journal(path)
    assert contents is not None
    assert len(contents.results) == 200
    assert contents.pending == []
    assert len(synced_sizes) < 400
    assert all(any(synced >= size for synced in synced_sizes) for size in durable_sizes)
