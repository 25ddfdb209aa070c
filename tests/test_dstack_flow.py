"""dstack's single-file flow: apply -f and delete -f with their [y/n] questions, and -n NAME."""

from __future__ import annotations

import json
from pathlib import Path

from providers.base import VolumeSpec
from providers.local import LocalProvider
from tests.conftest import run, volume_file, write
from tests.terminal import run_in_terminal

STATE = "volplan.state.json"


def records(project: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    state = json.loads((project / STATE).read_text())
    return {record["address"]: record for record in state["resources"]}


def actions(project: Path, *args: str) -> list[tuple[str, str]]:
    result = run(project, "plan", "--json", *args)
    assert result.exit_code == 0, result.output
    return [(c["address"], c["action"]) for c in json.loads(result.stdout)["changes"] if c["action"] != "no-op"]


def test_apply_f_asks_dstack_question_then_prints_table(project: Path, local_root: Path) -> None:
    volume_file(project, "my-volume")

    result = run_in_terminal(
        project,
        "apply",
        "-f",
        "my-volume.dstack.yml",
        answers=[("Volume my-volume does not exist yet. Create the volume? [y/n]:", "y")],
    )

    assert result.exit_code == 0, result.screen
    assert result.unanswered == []
    table = result.screen[result.screen.index("Apply complete!") :]
    assert " NAME       BACKEND  REGION        STATUS     CREATED" in table
    assert " my-volume  aws      eu-central-1  available  now" in table
    assert "volume.my-volume" in records(project)


def test_apply_f_answered_no_changes_nothing(project: Path, local_root: Path) -> None:
    volume_file(project, "my-volume")

    result = run_in_terminal(
        project, "apply", "-f", "my-volume.dstack.yml", answers=[("Create the volume? [y/n]:", "n")]
    )

    assert result.exit_code == 1
    assert "nothing was changed" in result.screen
    assert not (project / STATE).exists()
    assert not list(local_root.glob("vol-*"))


def test_apply_f_on_changed_volume_says_what_changes(project: Path, local_root: Path) -> None:
    volume_file(project, "my-volume", size="100GB")
    run(project, "apply", "-f", "my-volume.dstack.yml", "-y")
    volume_file(project, "my-volume", size="200GB")

    result = run_in_terminal(
        project,
        "apply",
        "-f",
        "my-volume.dstack.yml",
        answers=[("Volume my-volume changes: size grows from 100GB to 200GB. Update the volume? [y/n]:", "y")],
    )

    assert result.exit_code == 0, result.screen
    assert result.unanswered == []
    assert records(project)["volume.my-volume"]["size_gb"] == 200


def test_delete_f_asks_dstack_question(project: Path, local_root: Path) -> None:
    volume_file(project, "my-volume")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.my-volume"]["id"]

    result = run_in_terminal(
        project, "delete", "-f", "my-volume.dstack.yml", answers=[("Delete the volume my-volume? [y/n]:", "y")]
    )

    assert result.exit_code == 0, result.screen
    assert result.unanswered == []
    assert records(project) == {}
    assert not (local_root / volume_id).exists()


def test_several_changes_ask_one_summary_question(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-0", "-y")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-1", "-y")

    result = run_in_terminal(
        project, "destroy", "-f", "data.dstack.yml", answers=[("This will delete 2 volumes. Proceed? [y/n]:", "y")]
    )

    assert result.exit_code == 0, result.screen
    assert result.unanswered == []
    assert result.screen.count("[y/n]") == 1
    assert records(project) == {}


def test_destroy_without_f_asks_for_yes(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    result = run_in_terminal(project, "destroy", answers=[("Enter a value:", "yes")])

    assert result.exit_code == 0, result.screen
    assert "Only 'yes' will be accepted" in result.screen
    assert "[y/n]" not in result.screen
    assert records(project) == {}


def test_name_override_makes_copies_recorded_with_file(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")

    for name in ("data-0", "data-1"):
        result = run(project, "apply", "-f", "data.dstack.yml", "-n", name, "-y")
        assert result.exit_code == 0, result.output
        assert f" {name}  " in result.stdout

    recorded = records(project)
    assert sorted(recorded) == ["volume.data-0", "volume.data-1"]
    for name in ("data-0", "data-1"):
        assert recorded[f"volume.{name}"]["file"] == "data.dstack.yml"
        assert recorded[f"volume.{name}"]["name_override"] == name
        assert recorded[f"volume.{name}"]["name"] == name
    assert len({record["id"] for record in recorded.values()}) == 2


def test_plain_apply_keeps_name_overrides(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-0", "-y")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-1", "-y")

    assert actions(project) == [("volume.data", "create")]
    assert actions(project, "-f", "data.dstack.yml") == [("volume.data", "create")]
    applied = run(project, "apply", "-y")
    assert applied.exit_code == 0, applied.output
    assert sorted(records(project)) == ["volume.data", "volume.data-0", "volume.data-1"]
    assert actions(project) == []


def test_name_overrides_follow_their_file(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-0", "-y")
    volume_file(project, "data", size="20GB")

    assert actions(project, "-f", "data.dstack.yml", "-n", "data-0") == [("volume.data-0", "update")]
    run(project, "apply", "-y")

    assert records(project)["volume.data-0"]["size_gb"] == 20


def test_name_overrides_deleted_when_file_is_gone(project: Path, local_root: Path) -> None:
    path = volume_file(project, "data")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-0", "-y")
    path.unlink()

    assert actions(project) == [("volume.data-0", "delete")]


def test_delete_f_n_removes_only_that_copy(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    for name in ("data-0", "data-1"):
        run(project, "apply", "-f", "data.dstack.yml", "-n", name, "-y")
    kept = records(project)["volume.data-0"]["id"]

    result = run(project, "delete", "-f", "data.dstack.yml", "-n", "data-1", "-y")

    assert result.exit_code == 0, result.output
    assert "1 to delete" in result.stdout
    assert sorted(records(project)) == ["volume.data", "volume.data-0"]
    assert (local_root / kept).is_dir()


def test_delete_f_removes_every_volume_of_the_file(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "other")
    run(project, "apply", "-y")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "data-0", "-y")

    result = run(project, "delete", "-f", "data.dstack.yml", "-y")

    assert result.exit_code == 0, result.output
    assert "reason: destroy was asked for; the volume (100GB) and its data will be destroyed" in result.stdout
    assert sorted(records(project)) == ["volume.other"]


def test_f_run_never_plans_deletion_of_other_files(project: Path, local_root: Path) -> None:
    volume_file(project, "aa")
    volume_file(project, "bb")
    run(project, "apply", "-y")
    (project / "bb.dstack.yml").unlink()
    volume_file(project, "aa", size="200GB")

    assert actions(project, "-f", "aa.dstack.yml") == [("volume.aa", "update")]
    assert actions(project, "-f", "aa.dstack.yml", "-n", "aa-1") == [("volume.aa-1", "create")]
    applied = run(project, "apply", "-f", "aa.dstack.yml", "-y")
    assert applied.exit_code == 0, applied.output
    assert sorted(records(project)) == ["volume.aa", "volume.bb"]


def test_name_override_rejects_a_name_another_file_uses(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "logs")
    run(project, "apply", "-y")
    before = (project / STATE).read_bytes()

    result = run(project, "apply", "-f", "data.dstack.yml", "-n", "logs", "-y")

    assert result.exit_code == 1
    assert "volume.logs already exists, defined by logs.dstack.yml" in result.stderr
    assert (project / STATE).read_bytes() == before


def test_file_clashing_with_override_fails(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-f", "data.dstack.yml", "-n", "logs", "-y")
    volume_file(project, "logs")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "logs.dstack.yml: volume.logs is defined there" in result.stderr
    assert "data.dstack.yml applied with -n logs" in result.stderr


def test_name_option_needs_one_volume_file(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "logs")
    write(project, "train.dstack.yml", "type: task\ncommands: [python train.py]\n")

    without_file = run(project, "apply", "-n", "x1", "-y")
    two_files = run(project, "apply", "-f", "data.dstack.yml", "-f", "logs.dstack.yml", "-n", "x1", "-y")
    run_file = run(project, "apply", "-f", "train.dstack.yml", "-n", "x1", "-y")
    bad_name = run(project, "apply", "-f", "data.dstack.yml", "-n", "Bad_Name", "-y")

    for result in (without_file, two_files):
        assert result.exit_code == 1
        assert "-n needs one configuration file" in result.stderr
    assert run_file.exit_code == 1
    assert "not a volume configuration" in run_file.stderr
    assert bad_name.exit_code == 1
    assert "'Bad_Name' is not a valid volume name" in bad_name.stderr
    assert not (project / STATE).exists()


def test_name_equal_to_configuration_name_is_no_override(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    run(project, "apply", "-f", "data.dstack.yml", "-n", "data", "-y")

    assert "name_override" not in records(project)["volume.data"]
    assert actions(project) == []


def test_registered_copy_keeps_data_on_delete(project: Path, local_root: Path) -> None:
    provider = LocalProvider(local_root)
    spec = VolumeSpec("volume.source", "source", "aws", "eu-central-1", None, 100, {}, "another-lineage")
    volume_id = provider.create_volume(spec, token="made-outside").id
    (provider.volume_data_path(volume_id) / "keep.txt").write_text("kept")
    write(
        project,
        "shared.dstack.yml",
        f"type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: {volume_id}\n",
    )
    run(project, "apply", "-f", "shared.dstack.yml", "-n", "shared-1", "-y")

    result = run(project, "delete", "-f", "shared.dstack.yml", "-n", "shared-1", "-y")

    assert result.exit_code == 0, result.output
    assert "1 to deregister" in result.stdout
    assert (provider.volume_data_path(volume_id) / "keep.txt").read_text() == "kept"
