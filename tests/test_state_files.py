"""State files from elsewhere: upgrades of older files, newer files, damaged files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from providers.base import VolumeSpec
from providers.local import LocalProvider
from tests.conftest import run, run_process, volume_file, write

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


# Damaged records: a file edited by hand or merged badly, with valid JSON and wrong contents.

TRAIN = "type: task\nnodes: 2\ncommands: [python train.py]\nvolumes: [/mnt/cache:/cache]\n"


def _applied_records(project: Path) -> dict[str, Any]:
    """Apply volumes aa and bb and a two-node run, twice, so that the backup exists."""
    volume_file(project, "aa")
    volume_file(project, "bb")
    write(project, "train.dstack.yml", TRAIN)
    assert run(project, "apply", "-y").exit_code == 0
    volume_file(project, "bb", size="200GB")
    assert run(project, "apply", "-y").exit_code == 0
    state: dict[str, Any] = json.loads((project / STATE).read_text())
    return state


def _record(state: dict[str, Any], address: str) -> dict[str, Any]:
    found: dict[str, Any] = next(record for record in state["resources"] if record["address"] == address)
    return found


def _edit(target: str, **fields: Any) -> Any:
    def edit(state: dict[str, Any]) -> None:
        _record(state, target).update(fields)

    return edit


def _copy_id(source: str, target: str) -> Any:
    def edit(state: dict[str, Any]) -> None:
        _record(state, target)["id"] = _record(state, source)["id"]

    return edit


def _remove(address: str) -> Any:
    def edit(state: dict[str, Any]) -> None:
        state["resources"].remove(_record(state, address))

    return edit


NODE_0 = "run.train.node[0]"
NODE_1 = "run.train.node[1]"
MOUNT_1 = "run.train.node[1].mount[/cache]"
DAMAGED_RECORDS = {
    "volume-address-invalid": (
        _edit("volume.aa", address="volume.ZZ top"),
        'address "volume.ZZ top" is not volume.NAME with a valid volume name',
    ),
    "volume-address-kind": (_edit("volume.aa", address="run.aa"), 'address "run.aa" is not volume.NAME'),
    "volume-address-other-name": (
        _edit("volume.aa", address="volume.zz"),
        'address "volume.zz" does not match name "aa": expected volume.aa',
    ),
    "volume-name-invalid": (_edit("volume.aa", name="A"), 'name "A" is not a valid volume name'),
    "name-override-differs": (_edit("volume.aa", name_override="cc"), 'name_override "cc" differs from its name "aa"'),
    "volume-id-twice": (_copy_id("volume.aa", "volume.bb"), "is also recorded by volume.aa; each volume has one"),
    "tags-list": (_edit("volume.aa", tags=[1]), "tags is [1], expected a mapping"),
    "tags-number-value": (_edit("volume.aa", tags={"team": 1}), "expected a mapping of strings to strings"),
    "size-text": (_edit("volume.aa", size_gb="big"), 'size_gb is "big", expected a number'),
    "size-null": (_edit("volume.aa", size_gb=None), "size_gb is null, expected a number"),
    "size-negative": (_edit("volume.aa", size_gb=-5), "size_gb is -5, expected a whole number of GB from 1 to 1048576"),
    "size-huge": (_edit("volume.aa", size_gb=10**400), "expected a whole number of GB from 1 to 1048576"),
    "size-true": (_edit("volume.aa", size_gb=True), "size_gb is true, expected a number"),
    "external-text": (_edit("volume.aa", external="no"), 'external is "no", expected true or false'),
    "kind-unknown": (_edit("volume.aa", kind="banana"), 'kind is "banana", expected one of volume, run, node, mount'),
    "volume-id-path": (_edit("volume.aa", id="../../etc"), 'id "../../etc" is not a provider id'),
    "volume-id-dots": (_edit("volume.aa", id="vol-a..b"), 'id "vol-a..b" is not a provider id'),
    "volume-id-nul": (_edit("volume.aa", id="vol-\u0000"), "is not a provider id"),
    "volume-id-empty": (_edit("volume.aa", id=""), 'id "" is not a provider id'),
    "run-address": (_edit("run.train", address="run.bad\nname"), 'address "run.bad\\nname" is not run.NAME'),
    "run-renamed-without-nodes": (_edit("run.train", address="run.other"), "run run.train is not recorded as a run"),
    "pending-rename-text": (
        _edit("volume.aa", pending_rename="yes"),
        'pending_rename is "yes", expected true or false',
    ),
    "run-missing": (_remove("run.train"), "run run.train is not recorded as a run"),
    "node-address": (
        _edit(NODE_1, address="run.train.node[x]"),
        "does not match run run.train: expected run.train.node[INDEX]",
    ),
    "node-rank": (_edit(NODE_1, rank="1"), 'rank is "1", expected a number'),
    "node-id-twice": (_copy_id(NODE_0, NODE_1), f"is also recorded by {NODE_0}; each node has one address"),
    "node-id-path": (_edit(NODE_1, id="i-1/../../x"), 'id "i-1/../../x" is not a provider id'),
    "mount-node-missing": (_remove(NODE_1), f"node {NODE_1} is not recorded as a node"),
    "mount-address": (
        _edit(MOUNT_1, address=f"{NODE_1}.mount[/elsewhere]"),
        f"does not match its node and path: expected {MOUNT_1}",
    ),
    "mount-path": (_edit(MOUNT_1, path="cache"), 'path "cache" is not an absolute path'),
}


@pytest.mark.parametrize(("edit", "expected"), DAMAGED_RECORDS.values(), ids=DAMAGED_RECORDS.keys())
def test_damaged_record_is_reported(project: Path, local_root: Path, edit: Any, expected: str) -> None:
    state = _applied_records(project)
    edit(state)
    (project / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    damaged = (project / STATE).read_bytes()
    backup = (project / f"{STATE}.backup").read_bytes()
    volumes = sorted(path.name for path in local_root.glob("vol-*"))

    results = [run(project, *args) for args in (["plan"], ["apply", "-y"], ["drift"], ["destroy", "-y"])]

    for result in results:
        assert result.exit_code == 1, result.output
        assert "Damaged state file" in result.stderr
        assert expected in result.stderr
        assert f"Restore it from git or from {project / STATE}.backup" in result.stderr
        assert "Traceback" not in result.output
    assert (project / STATE).read_bytes() == damaged
    assert (project / f"{STATE}.backup").read_bytes() == backup
    assert sorted(path.name for path in local_root.glob("vol-*")) == volumes


def test_damaged_field_names_its_line(project: Path, local_root: Path) -> None:
    state = _applied_records(project)
    _record(state, "volume.bb")["size_gb"] = -5
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    (project / STATE).write_text(text)
    lines = text.splitlines()
    address = lines.index('      "address": "volume.bb",')
    size = next(number for number in range(address, len(lines)) if '"size_gb": -5' in lines[number])
    position = [record["address"] for record in state["resources"]].index("volume.bb")

    result = run(project, "plan")

    assert f"{STATE}:{size + 1}: resources[{position}] (volume.bb): size_gb is -5" in result.stderr


def test_every_damaged_record_is_listed(project: Path, local_root: Path) -> None:
    state = _applied_records(project)
    _record(state, "volume.aa")["size_gb"] = "big"
    _record(state, "volume.bb")["kind"] = "banana"

    (project / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    result = run(project, "plan")

    assert 'size_gb is "big"' in result.stderr
    assert 'kind is "banana"' in result.stderr


def test_damaged_record_without_backup(project: Path, local_root: Path) -> None:
    volume_file(project, "aa")
    assert run(project, "apply", "-y").exit_code == 0
    state = json.loads((project / STATE).read_text())
    _record(state, "volume.aa")["size_gb"] = 0
    (project / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "size_gb is 0" in result.stderr
    assert "Restore it from git, then run the command again." in result.stderr
    assert ".backup" not in result.stderr
    assert not (project / f"{STATE}.backup").exists()


def test_invalid_address_leaves_volume_untouched(project: Path, local_root: Path) -> None:
    """Before this check, the address was planned as a delete and a create, and the data was lost."""
    volume_file(project, "aa")
    volume_file(project, "bb")
    assert run(project, "apply", "-y").exit_code == 0
    state = json.loads((project / STATE).read_text())
    volume_id = _record(state, "volume.aa")["id"]
    data = LocalProvider(local_root).volume_data_path(volume_id) / "weights.bin"
    data.write_bytes(b"model")
    _record(state, "volume.aa")["address"] = "volume.ZZ top"
    (project / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    damaged = (project / STATE).read_bytes()
    metadata = (local_root / volume_id / "volume.json").read_bytes()

    result = run_process(project, "apply", "-y")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Damaged state file" in result.stderr
    assert 'address "volume.ZZ top" is not volume.NAME' in result.stderr
    assert "Traceback" not in result.stderr
    assert (project / STATE).read_bytes() == damaged
    assert data.read_bytes() == b"model"
    assert (local_root / volume_id / "volume.json").read_bytes() == metadata
    assert not (project / f"{STATE}.backup").exists()


def test_older_file_without_optional_fields_upgrades(project: Path, local_root: Path) -> None:
    volume_file(project, "aa")
    assert run(project, "apply", "-y").exit_code == 0
    _strip_fields(project, "provider", "external", "size_gb", "tags", "created_at")

    result = run(project, "plan", "--detailed-exitcode")

    assert result.exit_code in (0, 2), result.output
    assert "Damaged state file" not in result.stderr


def test_register_of_recorded_volume_rejected(project: Path, local_root: Path) -> None:
    volume_file(project, "aa")
    assert run(project, "apply", "-y").exit_code == 0
    volume_id = json.loads((project / STATE).read_text())["resources"][0]["id"]
    write(
        project,
        "bb.dstack.yml",
        f"type: volume\nname: bb\nbackend: aws\nregion: eu-central-1\nvolume_id: {volume_id}\n",
    )
    before = (project / STATE).read_bytes()

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert f"volume.bb: volume_id {volume_id} is already recorded as volume.aa" in result.stderr
    assert (project / STATE).read_bytes() == before
