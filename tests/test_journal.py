"""The journal's file format under crashes: torn lines, restarted sessions, kept intents."""

from __future__ import annotations

from pathlib import Path

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
