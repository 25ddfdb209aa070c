"""The main job end to end through the CLI: plan, apply, grow, shrink, register, delete."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from providers.base import VolumeSpec
from providers.local import LocalProvider
from tests.conftest import run, volume_file, write

STATE = "volplan.state.json"


def read_state(project: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((project / STATE).read_text())


def test_apply_then_plan_has_no_changes(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "logs", region="us-east-1", size="20GB")

    applied = run(project, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert "Plan: 2 to create." in applied.stdout

    planned = run(project, "plan", "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output
    assert "No changes." in planned.stdout


def test_second_apply_leaves_state_byte_identical(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    first = (project / STATE).read_bytes()

    again = run(project, "apply", "--auto-approve")

    assert again.exit_code == 0
    assert (project / STATE).read_bytes() == first


def test_state_file_shape(project: Path, local_root: Path) -> None:
    volume_file(project, "zeta")
    volume_file(project, "alpha")
    run(project, "apply", "-y")

    text = (project / STATE).read_text()
    state = json.loads(text)
    assert text == json.dumps(state, indent=2, sort_keys=True) + "\n"
    assert set(state) == {"version", "lineage", "serial", "resources"}
    assert [r["address"] for r in state["resources"]] == ["volume.alpha", "volume.zeta"]
    assert stat.S_IMODE(os.stat(project / STATE).st_mode) == 0o600
    for record in state["resources"]:
        starting_with_vol = [k for k, v in record.items() if isinstance(v, str) and v.startswith("vol-")]
        assert starting_with_vol == ["id"]


def test_local_layout_matches_ids(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    volume_id = read_state(project)["resources"][0]["id"]
    assert (local_root / volume_id / "data").is_dir()
    metadata = json.loads((local_root / volume_id / "volume.json").read_text())
    assert metadata["token"]
    assert metadata["backend"] == "aws"


def test_grow_plans_one_update(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="100GB")
    volume_file(project, "other")
    run(project, "apply", "-y")
    volume_file(project, "data", size="200GB")

    planned = run(project, "plan", "--json")

    changes = [c for c in json.loads(planned.stdout)["changes"] if c["action"] != "no-op"]
    assert [(c["address"], c["action"]) for c in changes] == [("volume.data", "update")]
    assert changes[0]["after"]["size_gb"] == 200


def test_grow_applies_in_place(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="100GB")
    run(project, "apply", "-y")
    volume_id = read_state(project)["resources"][0]["id"]
    volume_file(project, "data", size="200GB")

    assert run(project, "apply", "-y").exit_code == 0

    record = read_state(project)["resources"][0]
    assert record["id"] == volume_id
    assert record["size_gb"] == 200
    assert LocalProvider(local_root).read_volume(volume_id).size_gb == 200


def test_shrink_fails_naming_file_volume_and_reason(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="200GB")
    run(project, "apply", "-y")
    before = (project / STATE).read_bytes()
    volume_file(project, "data", size="100GB")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "data.dstack.yml:5" in result.stderr
    assert "volume.data" in result.stderr
    assert "only grow" in result.stderr
    assert "Traceback" not in result.output
    assert run(project, "apply", "-y").exit_code == 1
    assert (project / STATE).read_bytes() == before


def test_registered_volume_deregistered_and_kept(project: Path, local_root: Path) -> None:
    provider = LocalProvider(local_root)
    made = provider.create_volume(
        VolumeSpec("volume.shared", "shared", "aws", "eu-central-1", None, 50, {}, "test"), token="t1"
    )
    (provider.volume_data_path(made.id) / "keep.txt").write_text("precious")
    write(
        project,
        "shared.dstack.yml",
        f"type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: {made.id}\n",
    )

    registered = run(project, "apply", "-y")
    assert registered.exit_code == 0, registered.output
    assert "1 to register" in registered.stdout
    record = read_state(project)["resources"][0]
    assert record["external"] is True
    assert record["size_gb"] == 50

    (project / "shared.dstack.yml").unlink()
    removed = run(project, "apply", "-y")

    assert removed.exit_code == 0, removed.output
    assert "1 to deregister" in removed.stdout
    assert read_state(project)["resources"] == []
    assert (provider.volume_data_path(made.id) / "keep.txt").read_text() == "precious"


def test_register_unknown_id_fails(project: Path, local_root: Path) -> None:
    write(
        project,
        "shared.dstack.yml",
        "type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: vol-00000000000000000\n",
    )

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "shared.dstack.yml:2: volume.shared: volume_id vol-00000000000000000 does not exist" in result.stderr
    assert not (project / STATE).exists()


def test_managed_volume_removal_deletes_folder(project: Path, local_root: Path) -> None:
    path = volume_file(project, "data")
    run(project, "apply", "-y")
    volume_id = read_state(project)["resources"][0]["id"]
    assert (local_root / volume_id).is_dir()
    path.unlink()

    result = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert "1 to delete" in result.stdout
    assert "will be destroyed" in result.stdout
    assert not (local_root / volume_id).exists()


def test_vanished_volume_is_created_again_with_warning(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_id = read_state(project)["resources"][0]["id"]
    LocalProvider(local_root).delete_volume(volume_id)

    result = run(project, "plan")

    assert "1 to create" in result.stdout
    assert "data is gone" in result.stdout


def test_region_change_is_refused_without_allow_replace(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-central-1")
    run(project, "apply", "-y")
    volume_file(project, "data", region="us-east-1")

    refused = run(project, "plan")
    allowed = run(project, "apply", "-y", "--allow-replace")

    assert refused.exit_code == 1
    assert "--allow-replace" in refused.stderr
    assert allowed.exit_code == 0, allowed.output
    assert read_state(project)["resources"][0]["region"] == "us-east-1"


def test_tags_change_is_an_update(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_file(project, "data", extra="tags:\n  team: ml\n")

    result = run(project, "apply", "-y")

    assert "1 to update" in result.stdout
    volume_id = read_state(project)["resources"][0]["id"]
    assert dict(LocalProvider(local_root).read_volume(volume_id).tags) == {"team": "ml"}


def test_run_naming_unknown_volume_fails(project: Path, local_root: Path) -> None:
    write(project, "train.dstack.yml", "type: task\nnodes: 2\ncommands: [python train.py]\nvolumes:\n  - data:/data\n")

    result = run(project, "plan")

    assert result.exit_code == 1, result.output
    assert "train.dstack.yml: run.train: mount /data: no volume named data" in result.stderr
    assert "Traceback" not in result.output


def test_serial_increments_only_on_change(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "apply", "-y")
    first = read_state(project)["serial"]
    run(project, "apply", "-y")
    volume_file(project, "data", size="11GB")
    run(project, "apply", "-y")

    assert read_state(project)["serial"] == first + 1


def test_backup_holds_state_as_first_read(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "apply", "-y")
    original = (project / STATE).read_text()
    volume_file(project, "data", size="11GB")

    run(project, "apply", "-y")

    assert (project / f"{STATE}.backup").read_text() == original
    assert stat.S_IMODE(os.stat(project / f"{STATE}.backup").st_mode) == 0o600


def test_duplicate_volume_names_name_both_files(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    write(project, "sub/copy.dstack.yml", "type: volume\nname: data\nbackend: aws\nregion: eu-central-1\nsize: 1\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "data.dstack.yml" in result.stderr
    assert "sub/copy.dstack.yml:2" in result.stderr


def test_config_errors_are_all_reported(project: Path, local_root: Path) -> None:
    write(project, "a.dstack.yml", "type: volume\nname: A\nbackend: aws\nregion: x\nsize: 512MB\n")
    write(project, "b.dstack.yml", "type: volume\nname: bb\nbackend: aws\nregion: x\nsize: 1\nsiez: 2\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "3 configuration errors" in result.stderr
    assert "a.dstack.yml:2:7: name" in result.stderr
    assert "a.dstack.yml:5:7: size" in result.stderr
    assert "Did you mean size?" in result.stderr


def test_state_option_moves_the_state(project: Path, local_root: Path, tmp_path: Path) -> None:
    volume_file(project, "data")
    elsewhere = tmp_path / "states" / "prod.json"
    elsewhere.parent.mkdir()

    result = run(project, "apply", "-y", "--state", str(elsewhere))

    assert result.exit_code == 0, result.output
    assert elsewhere.exists()
    assert not (project / STATE).exists()
