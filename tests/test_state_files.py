"""State files from elsewhere: upgrades of older files, newer files, damaged files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from providers.base import VolumeSpec
from providers.local import LocalProvider
from tests.conftest import run, volume_file

STATE = "volplan.state.json"


def _strip_fields(project: Path, *names: str) -> str:
    """Rewrite the state as an older volplan would have written it, without `names`."""
    state = json.loads((project / STATE).read_text())
    for record in state["resources"]:
        for name in names:
            record.pop(name, None)
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    (project / STATE).write_text(text)
    return text


def _upgrade_backups(project: Path) -> list[Path]:
    return sorted(project.glob(f"{STATE}.v1-*.backup"))


def test_upgraded_state_deletes_its_volume(project: Path, local_root: Path) -> None:
    path = volume_file(project, "data")
    assert run(project, "apply", "-y").exit_code == 0
    volume_id = json.loads((project / STATE).read_text())["resources"][0]["id"]
    old_text = _strip_fields(project, "provider", "external")
    path.unlink()

    result = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert "upgraded in memory" in result.stdout
    assert "volplan created this volume, so it is managed" in result.stdout
    assert "Plan: 1 to delete." in result.stdout
    assert not (local_root / volume_id).exists()
    state = json.loads((project / STATE).read_text())
    assert state["version"] == 1
    assert state["resources"] == []
    backups = _upgrade_backups(project)
    assert len(backups) == 1
    assert backups[0].read_text() == old_text


def test_upgraded_state_keeps_foreign_volume(project: Path, local_root: Path) -> None:
    made = LocalProvider(local_root).create_volume(
        VolumeSpec("volume.shared", "shared", "aws", "eu-central-1", None, 5, {}, "another-lineage"), token="t"
    )
    path = volume_file(project, "shared", extra=f"volume_id: {made.id}\n")
    path.write_text(path.read_text().replace("size: 100GB\n", ""))
    assert run(project, "apply", "-y").exit_code == 0
    _strip_fields(project, "provider", "external")
    path.unlink()

    result = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert "treated as registered" in result.stdout
    assert "Plan: 1 to deregister." in result.stdout
    assert (local_root / made.id).is_dir()


def test_refresh_writes_upgraded_state(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    assert run(project, "apply", "-y").exit_code == 0
    old_text = _strip_fields(project, "provider", "external")

    planned = run(project, "plan", "--detailed-exitcode")
    assert (project / STATE).read_text() == old_text
    refreshed = run(project, "refresh", "-y")

    assert planned.exit_code == 0, planned.output
    assert refreshed.exit_code == 0, refreshed.output
    record = json.loads((project / STATE).read_text())["resources"][0]
    assert record["provider"] == "local"
    assert record["external"] is False
    assert [path.read_text() for path in _upgrade_backups(project)] == [old_text]
    assert run(project, "refresh", "-y").exit_code == 0
    assert len(_upgrade_backups(project)) == 1


@pytest.mark.parametrize(
    "args",
    [["plan"], ["apply", "-y"], ["destroy", "-y"], ["drift"], ["refresh", "-y"]],
    ids=lambda args: args[0],
)
def test_newer_state_refused_untouched(project: Path, local_root: Path, args: list[str]) -> None:
    volume_file(project, "data")
    text = json.dumps({"version": 999, "lineage": "not checked", "serial": 1, "resources": [], "future": True})
    (project / STATE).write_text(text)
    os.utime(project / STATE, (1_000_000_000, 1_000_000_000))

    result = run(project, *args)

    assert result.exit_code == 1
    assert "State file from a newer volplan" in result.stderr
    assert "version 999" in result.stderr
    assert (project / STATE).read_text() == text
    assert (project / STATE).stat().st_mtime == 1_000_000_000
    assert not list(project.glob("*.backup"))


def _valid_state(project: Path) -> dict[str, Any]:
    volume_file(project, "data")
    volume_file(project, "logs")
    assert run(project, "apply", "-y").exit_code == 0
    # A second apply that changes something leaves the backup that damaged-file errors point to.
    volume_file(project, "logs", size="200GB")
    assert run(project, "apply", "-y").exit_code == 0
    state: dict[str, Any] = json.loads((project / STATE).read_text())
    return state


def _damage(project: Path, how: str) -> None:
    path = project / STATE
    state = json.loads(path.read_text())
    if how == "truncated":
        path.write_text(path.read_text()[:200])
        return
    if how == "wrong-type":
        state["resources"][1]["external"] = "no"
    elif how == "duplicate":
        state["resources"][1]["address"] = state["resources"][0]["address"]
    elif how == "serial":
        state["serial"] = "seven"
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("truncated", "volplan.state.json:"),
        ("wrong-type", 'external is "no", expected true or false'),
        ("duplicate", "address volume.data appears twice"),
        ("serial", 'serial "seven" is not a non-negative number'),
    ],
)
def test_damaged_state_is_reported(project: Path, local_root: Path, how: str, expected: str) -> None:
    _valid_state(project)
    _damage(project, how)
    damaged = (project / STATE).read_bytes()
    backup = (project / f"{STATE}.backup").read_bytes()

    results = [run(project, "plan"), run(project, "apply", "-y"), run(project, "drift")]

    for result in results:
        assert result.exit_code == 1
        assert "Damaged state file" in result.stderr
        assert expected in result.stderr
        assert f"{STATE}.backup" in result.stderr
        assert "Traceback" not in result.output
    assert (project / STATE).read_bytes() == damaged
    assert (project / f"{STATE}.backup").read_bytes() == backup


def test_damage_position_is_a_line(project: Path, local_root: Path) -> None:
    _valid_state(project)
    _damage(project, "duplicate")
    lines = (project / STATE).read_text().splitlines()
    second = [number for number, line in enumerate(lines, start=1) if '"address": "volume.data"' in line][1]

    result = run(project, "plan")

    assert f"{STATE}:{second}: resources[1]" in result.stderr


def test_truncated_state_names_line_and_column(project: Path, local_root: Path) -> None:
    (project / STATE).write_text('{\n  "version": 1,\n  "lineage": "abc')

    result = run(project, "plan")

    assert result.exit_code == 1
    assert f"{STATE}:3:14: invalid JSON" in result.stderr


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_state_that_is_not_a_regular_file(project: Path, local_root: Path, tmp_path: Path, kind: str) -> None:
    volume_file(project, "data")
    if kind == "symlink":
        target = tmp_path / "elsewhere.json"
        target.write_text("{}")
        (project / STATE).symlink_to(target)
    else:
        os.mkfifo(project / STATE)

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "State file is not a regular file" in result.stderr
    assert ("symbolic link" if kind == "symlink" else "special file") in result.stderr
    assert (project / STATE).is_symlink() == (kind == "symlink")
    if kind == "symlink":
        assert target.read_text() == "{}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"op": "intent", "seq": 1, "address": "volume.x", "action": "explode", "token": "t", "time": "x"}, "explode"),
        ({"op": "rewind"}, "unknown op"),
    ],
)
def test_journal_with_unknown_entries(project: Path, local_root: Path, line: dict[str, Any], expected: str) -> None:
    state = _valid_state(project)
    journal = project / f"{STATE}.journal"
    journal.write_text(json.dumps({"op": "begin", "lineage": state["lineage"]}) + "\n" + json.dumps(line) + "\n")
    before = (project / STATE).read_bytes()

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "Damaged journal" in result.stderr
    assert f"{journal.name}:2" in result.stderr
    assert expected in result.stderr
    assert (project / STATE).read_bytes() == before
    assert journal.exists()
