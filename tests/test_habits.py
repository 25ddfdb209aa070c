"""Terraform habits on the command line: --target, --exclude, --replace, moved: and protect:."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.actions import Action, Change, Plan
from engine.errors import UsageError
from engine.planner import build_graph
from engine.targeting import check_address, narrow
from providers.base import VolumeSpec
from providers.local import LocalProvider
from state.journal import begin_entry, done_entry, encode_entry
from tests.conftest import run, volume_file, write

STATE = "volplan.state.json"


def records(project: Path) -> dict[str, dict[str, Any]]:
    state = json.loads((project / STATE).read_text())
    return {record["address"]: record for record in state["resources"]}


def plan_json(project: Path, *args: str) -> dict[str, Any]:
    result = run(project, "plan", "--json", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def actions(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["action"], c["address"]) for c in document["changes"] if c["action"] != "no-op"]


# --target and --exclude


def test_target_plans_only_that_volume(project: Path) -> None:
    volume_file(project, "aa")
    volume_file(project, "bb")

    document = plan_json(project, "-target", "volume.aa")

    assert actions(document) == [("create", "volume.aa")]


def test_target_warns_plan_is_partial(project: Path) -> None:
    volume_file(project, "aa")
    volume_file(project, "bb")

    result = run(project, "plan", "-target=volume.aa")

    assert "Warning: this plan is partial because of --target volume.aa: 1 other change" in result.stdout
    assert "volume.bb" not in result.stdout.split("Warning:")[0]


def test_exclude_leaves_volume_out(project: Path) -> None:
    volume_file(project, "aa")
    volume_file(project, "bb")

    document = plan_json(project, "-exclude", "volume.aa")

    assert actions(document) == [("create", "volume.bb")]


def test_target_apply_creates_only_target(project: Path) -> None:
    volume_file(project, "aa")
    volume_file(project, "bb")

    result = run(project, "apply", "-y", "-target", "volume.aa")

    assert result.exit_code == 0, result.output
    assert set(records(project)) == {"volume.aa"}


def test_destroy_target_deletes_only_target(project: Path, provider: LocalProvider) -> None:
    volume_file(project, "aa")
    volume_file(project, "bb")
    run(project, "apply", "-y")
    kept = records(project)["volume.bb"]["id"]

    result = run(project, "destroy", "-y", "-target", "volume.aa")

    assert result.exit_code == 0, result.output
    assert set(records(project)) == {"volume.bb"}
    assert provider.read_volume(kept).id == kept


def test_target_unknown_address_rejected(project: Path) -> None:
    volume_file(project, "aa")

    result = run(project, "plan", "-target", "volume.missing")

    assert result.exit_code == 1
    assert "volume.missing matches no resource" in result.stderr


def test_target_bare_name_suggests_address(project: Path) -> None:
    volume_file(project, "aa")

    result = run(project, "plan", "-target", "aa")

    assert result.exit_code == 1
    assert "Did you mean volume.aa?" in result.stderr


def test_saved_plan_rejects_target(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    volume_file(project, "aa")
    run(project, "plan", "-out=p.plan")

    result = run(project, "apply", "p.plan", "-target", "volume.aa")

    assert result.exit_code == 1
    assert "--target" in result.stderr


def _change(address: str, action: Action = Action.CREATE) -> Change:
    return Change(address, action, "test", None, {"address": address})


def _mount_plan() -> Plan:
    """A run whose mount needs a volume and a node, beside an unrelated volume."""
    mount = "run.train.node[0].mount[/data]"
    return Plan(
        changes=[_change("volume.data"), _change("volume.other"), _change("run.train.node[0]"), _change(mount)],
        edges=[("volume.data", mount), ("run.train.node[0]", mount)],
    )


def test_target_follows_dependencies() -> None:
    plan = _mount_plan()

    narrowed = narrow(plan, build_graph(plan), ("run.train.node[0].mount[/data]",), ())

    assert sorted(c.address for c in narrowed.changes) == [
        "run.train.node[0]",
        "run.train.node[0].mount[/data]",
        "volume.data",
    ]
    assert narrowed.edges == plan.edges


def test_target_run_selects_nested_addresses() -> None:
    plan = _mount_plan()

    narrowed = narrow(plan, build_graph(plan), ("run.train",), ())

    assert "volume.other" not in {c.address for c in narrowed.changes}
    assert "run.train.node[0].mount[/data]" in {c.address for c in narrowed.changes}


def test_exclude_drops_dependents() -> None:
    plan = _mount_plan()

    narrowed = narrow(plan, build_graph(plan), (), ("volume.data",))

    assert sorted(c.address for c in narrowed.changes) == ["run.train.node[0]", "volume.other"]
    assert narrowed.edges == []


def test_check_address_accepts_nested_forms() -> None:
    for address in ("volume.data", "run.train", "run.train.node[1]", "run.train.node[1].mount[/data]"):
        check_address(address, "--target")
    with pytest.raises(UsageError):
        check_address("instance.x", "--target")


# --replace


def test_replace_needs_allow_replace(project: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")

    result = run(project, "plan", "-replace", "volume.data")

    assert result.exit_code == 1
    assert "--replace volume.data forces a new volume" in result.stderr
    assert "--allow-replace" in result.stderr


def test_replace_makes_new_volume(project: Path, provider: LocalProvider) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    old = records(project)["volume.data"]["id"]

    result = run(project, "apply", "-y", "-replace=volume.data", "--allow-replace")

    assert result.exit_code == 0, result.output
    new = records(project)["volume.data"]["id"]
    assert new != old
    assert old not in provider.refresh_volumes([old, new])


def test_replace_registered_keeps_data(project: Path, provider: LocalProvider) -> None:
    spec = VolumeSpec("volume.outside", "outside", "aws", "eu-central-1", None, 100, {}, "another-lineage")
    volume_id = provider.create_volume(spec, token="made-outside").id
    write(
        project,
        "shared.dstack.yml",
        f"type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: {volume_id}\n",
    )
    run(project, "apply", "-y")

    document = plan_json(project, "-replace", "volume.shared")

    assert actions(document) == [("replace", "volume.shared")]


def test_replace_unknown_address_rejected(project: Path) -> None:
    volume_file(project, "data")

    result = run(project, "plan", "-replace", "volume.data")

    assert result.exit_code == 1
    assert "the state records no volume.data" in result.stderr


def test_destroy_rejects_replace(project: Path) -> None:
    result = run(project, "destroy", "-y", "-replace", "volume.data")

    assert result.exit_code == 1
    assert "Invalid option for destroy" in result.stderr


# moved:


def _rename_data(project: Path) -> None:
    write(project, "data.dstack.yml", "type: volume\nname: dataset\nbackend: aws\nregion: eu-central-1\nsize: 100GB\n")


MOVED = "moved:\n  - from: volume.data\n    to: volume.dataset\n"


def test_rename_with_moved_keeps_volume(project: Path, provider: LocalProvider) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]
    (provider.volume_data_path(volume_id) / "weights.bin").write_bytes(b"model")
    _rename_data(project)
    write(project, "volplan.yml", MOVED)

    document = plan_json(project)
    result = run(project, "apply", "-y")

    assert [(c["action"], c["address"], c.get("previous_address")) for c in document["changes"]] == [
        ("update", "volume.dataset", "volume.data")
    ]
    assert result.exit_code == 0, result.output
    state = records(project)
    assert set(state) == {"volume.dataset"}
    assert state["volume.dataset"]["id"] == volume_id
    assert state["volume.dataset"]["name"] == "dataset"
    assert provider.read_volume(volume_id).name == "dataset"
    assert json.loads((provider.root / volume_id / "volume.json").read_text())["address"] == "volume.dataset"
    assert (provider.volume_data_path(volume_id) / "weights.bin").read_bytes() == b"model"


def test_rename_shown_as_rename(project: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    _rename_data(project)
    write(project, "volplan.yml", MOVED)

    result = run(project, "plan")

    assert "# volume.dataset (moved from volume.data) will be renamed in place" in result.stdout
    assert '~ name      = "data" -> "dataset"' in result.stdout
    assert "Plan: 1 to update." in result.stdout


def test_rename_without_moved_warns_with_fix(project: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]
    _rename_data(project)

    result = run(project, "plan")

    assert "Plan: 1 to create, 1 to delete." in result.stdout
    assert f"The delete destroys volume {volume_id} (100GB) and its data" in result.stdout
    assert "  moved:\n    - from: volume.data\n      to: volume.dataset" in result.stdout


def test_rename_after_apply_is_no_op(project: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    _rename_data(project)
    write(project, "volplan.yml", MOVED)
    run(project, "apply", "-y")

    document = plan_json(project)

    assert actions(document) == []


def test_rename_interrupted_keeps_volume(project: Path, provider: LocalProvider) -> None:
    """A stop after the journal recorded the new address and before it dropped the old one."""
    volume_file(project, "data")
    run(project, "apply", "-y")
    state = json.loads((project / STATE).read_text())
    old = state["resources"][0]
    provider.update_volume(old["id"], size_gb=None, tags=None, name="dataset")
    _rename_data(project)
    write(project, "volplan.yml", MOVED)
    renamed = {**old, "address": "volume.dataset", "name": "dataset"}
    entries = [begin_entry(state["lineage"]), done_entry(None, "volume.dataset", renamed)]
    (project / f"{STATE}.journal").write_bytes(b"".join(encode_entry(entry) for entry in entries))

    planned = run(project, "plan")
    applied = run(project, "apply", "-y")

    assert "No changes." in planned.stdout
    assert applied.exit_code == 0, applied.output
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0
    assert [(address, record["id"]) for address, record in records(project).items()] == [("volume.dataset", old["id"])]
    assert provider.volume_data_path(old["id"]).is_dir()


def test_moved_ignored_when_old_still_defined(project: Path) -> None:
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_file(project, "dataset")
    write(project, "volplan.yml", MOVED)

    result = run(project, "plan")

    assert (
        "moved: from volume.data to volume.dataset is ignored: data.dstack.yml still defines volume.data"
        in result.stdout
    )


# protect:

PROTECT = "protect:\n  - volume.data\n"


def test_protected_file_removal_rejected(project: Path) -> None:
    volume_file(project, "data")
    write(project, "volplan.yml", PROTECT)
    run(project, "apply", "-y")
    (project / "data.dstack.yml").unlink()

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "Error: Protected volume" in result.stderr
    assert "volplan.yml:2: volume.data is protected, but this plan would delete volume" in result.stderr
    assert "remove '- volume.data' from protect:" in result.stderr
    assert set(records(project)) == {"volume.data"}


def test_protected_destroy_rejected(project: Path, provider: LocalProvider) -> None:
    volume_file(project, "data")
    write(project, "volplan.yml", PROTECT)
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]

    result = run(project, "destroy", "-y")

    assert result.exit_code == 1
    assert "volume.data is protected" in result.stderr
    assert provider.read_volume(volume_id).id == volume_id


def test_protected_replace_rejected(project: Path) -> None:
    volume_file(project, "data")
    write(project, "volplan.yml", PROTECT)
    run(project, "apply", "-y")

    result = run(project, "apply", "-y", "-replace", "volume.data", "--allow-replace")

    assert result.exit_code == 1
    assert "would replace volume" in result.stderr
    assert "--replace volume.data forces a new volume" in result.stderr


def test_protected_region_change_rejected(project: Path) -> None:
    volume_file(project, "data")
    write(project, "volplan.yml", PROTECT)
    run(project, "apply", "-y")
    volume_file(project, "data", region="us-east-1")

    result = run(project, "plan", "--allow-replace")

    assert result.exit_code == 1
    assert "region changes from eu-central-1 to us-east-1" in result.stderr


def test_protected_others_still_planned(project: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "scratch")
    write(project, "volplan.yml", PROTECT)
    run(project, "apply", "-y")

    document = plan_json(project, "-target", "volume.scratch", "--allow-replace", "-replace", "volume.scratch")

    assert actions(document) == [("replace", "volume.scratch")]


def test_delete_plan_shows_size_and_data_loss(project: Path) -> None:
    volume_file(project, "data", size="64GB")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]
    (project / "data.dstack.yml").unlink()

    result = run(project, "plan")

    assert '- size      = "64GB"' in result.stdout
    assert f"volume {volume_id} (64GB) and all its data will be destroyed" in result.stdout
