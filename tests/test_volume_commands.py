"""volume list, get and delete, over the volumes in the state."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engine.cli.tables import pretty_age
from providers.base import VolumeSpec
from providers.local import LocalProvider
from tests.conftest import run, volume_file, write
from tests.terminal import run_in_terminal

STATE = "volplan.state.json"


def records(project: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    state = json.loads((project / STATE).read_text())
    return {record["address"]: record for record in state["resources"]}


def registered_volume(project: Path, local_root: Path, name: str = "shared") -> str:
    made = LocalProvider(local_root).create_volume(
        VolumeSpec("volume.elsewhere", "elsewhere", "aws", "eu-central-1", None, 50, {}, "other"), token="t1"
    )
    write(
        project,
        f"{name}.dstack.yml",
        f"type: volume\nname: {name}\nbackend: aws\nregion: eu-central-1\nvolume_id: {made.id}\n",
    )
    return made.id


def test_list_prints_dstack_table(project: Path, local_root: Path) -> None:
    volume_file(project, "my-volume")
    volume_file(project, "logs", region="us-east-1")
    run(project, "apply", "-y")

    result = run(project, "volume", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        " NAME       BACKEND  REGION        STATUS     CREATED",
        " logs       aws      us-east-1     available  now",
        " my-volume  aws      eu-central-1  available  now",
    ]


def test_list_verbose_adds_id_size_attachments(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="64GB")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]

    result = run(project, "volume", "list", "-v")

    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "BACKEND", "REGION", "STATUS", "CREATED", "ID", "SIZE", "ATTACHED", "ERROR"]
    assert row.split() == ["data", "aws", "eu-central-1", "available", "now", volume_id, "64GB", "-"]


def test_list_shows_volumes_deleted_outside(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    LocalProvider(local_root).delete_volume(records(project)["volume.data"]["id"])

    result = run(project, "volume", "list", "-v")

    assert "not found" in result.stdout
    assert "deleted outside volplan" in result.stdout


def test_list_json(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_id = registered_volume(project, local_root)
    run(project, "apply", "-y")

    result = run(project, "volume", "list", "--json")

    volumes = {entry["name"]: entry for entry in json.loads(result.stdout)["volumes"]}
    assert sorted(volumes) == ["data", "shared"]
    assert volumes["shared"]["id"] == volume_id
    assert volumes["shared"]["external"] is True
    assert volumes["data"]["status"] == "available"
    assert volumes["data"]["size_gb"] == 100
    assert volumes["data"]["attachments"] == []
    assert volumes["data"]["provider"] == "local"


def test_list_without_state_is_empty(project: Path, local_root: Path) -> None:
    assert run(project, "volume", "list").stdout.split() == ["NAME", "BACKEND", "REGION", "STATUS", "CREATED"]
    assert json.loads(run(project, "volume", "list", "--json").stdout) == {"volumes": []}


def test_get_json(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    by_name = run(project, "volume", "get", "data", "--json")
    by_address = run(project, "volume", "get", "volume.data", "--json")

    assert by_name.exit_code == 0, by_name.output
    document = json.loads(by_name.stdout)
    assert document["name"] == "data"
    assert document["id"] == records(project)["volume.data"]["id"]
    assert document["file"] == "data.dstack.yml"
    assert json.loads(by_address.stdout) == document


def test_get_unknown_volume(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    result = run(project, "volume", "get", "nope", "--json")

    assert result.exit_code == 1
    assert "Volume not found" in result.stderr
    assert "volplan volume list" in result.stderr


def test_delete_managed_volume(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "keep")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]
    (project / "data.dstack.yml").unlink()

    result = run(project, "volume", "delete", "data", "-y")

    assert result.exit_code == 0, result.output
    assert "1 to delete" in result.stdout
    assert sorted(records(project)) == ["volume.keep"]
    assert not (local_root / volume_id).exists()
    assert "still defines" not in result.stdout


def test_delete_answered_no_cancels(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    (project / "data.dstack.yml").unlink()

    result = run_in_terminal(project, "volume", "delete", "data", answers=[("[y/n]:", "n")])

    assert result.exit_code == 1
    assert "Delete cancelled: nothing was changed." in result.screen
    assert "Apply cancelled" not in result.screen
    assert "volume.data" in records(project)


def test_delete_warns_when_file_still_defines_it(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    result = run(project, "volume", "delete", "data", "-y")

    assert result.exit_code == 0, result.output
    assert "data.dstack.yml still defines volume data" in result.stdout


def test_delete_registered_volume_deregisters(project: Path, local_root: Path) -> None:
    volume_id = registered_volume(project, local_root)
    run(project, "apply", "-y")
    data = LocalProvider(local_root).volume_data_path(volume_id)
    (data / "keep.txt").write_text("kept")

    result = run(project, "volume", "delete", "shared", "-y")

    assert result.exit_code == 0, result.output
    assert "1 to deregister" in result.stdout
    assert records(project) == {}
    assert (data / "keep.txt").read_text() == "kept"


def test_delete_asks_dstack_question(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    declined = run_in_terminal(project, "volume", "delete", "data", answers=[("Delete the volume data? [y/n]:", "n")])
    accepted = run_in_terminal(project, "volume", "delete", "data", answers=[("Delete the volume data? [y/n]:", "y")])

    assert declined.exit_code == 1
    assert declined.unanswered == []
    assert accepted.exit_code == 0, accepted.screen
    assert records(project) == {}


def test_delete_without_terminal_needs_yes(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    result = run(project, "volume", "delete", "data")

    assert result.exit_code == 1
    assert "-y" in result.stderr
    assert "volume.data" in records(project)


def test_delete_unknown_volume(project: Path, local_root: Path) -> None:
    result = run(project, "volume", "delete", "nope", "-y")

    assert result.exit_code == 1
    assert "Volume not found" in result.stderr


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2026-03-01T12:00:00Z", "now"),
        ("2026-03-01T11:55:00Z", "5 mins ago"),
        ("2026-03-01T11:00:00Z", "1 hour ago"),
        ("2026-02-27T12:00:00Z", "2 days ago"),
        ("2026-02-08T12:00:00Z", "3 weeks ago"),
        ("2025-03-01T12:00:00Z", "1 year ago"),
    ],
)
def test_pretty_age(created: str, expected: str) -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert pretty_age(created, now) == expected
