"""state list, show, rm and mv, and import: state surgery that never changes a volume."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from providers.base import VolumeSpec
from providers.local import LocalProvider
from tests.conftest import run, volume_file, write
from tests.terminal import run_in_terminal
from tests.test_locks import _hold_lock, _stop

STATE = "volplan.state.json"


def state_file(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / STATE).read_text())
    return data


def records(project: Path) -> dict[str, dict[str, Any]]:
    return {record["address"]: record for record in state_file(project)["resources"]}


def applied(project: Path, *names: str) -> dict[str, str]:
    for name in names:
        volume_file(project, name)
    result = run(project, "apply", "-y")
    assert result.exit_code == 0, result.output
    return {address: record["id"] for address, record in records(project).items()}


def test_list_prints_addresses(project: Path) -> None:
    applied(project, "data", "logs")

    result = run(project, "state", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["volume.data", "volume.logs"]


def test_list_filters_by_address(project: Path) -> None:
    applied(project, "data", "logs")

    result = run(project, "state", "list", "volume.logs")

    assert result.stdout.splitlines() == ["volume.logs"]


def test_list_without_state_fails(project: Path) -> None:
    result = run(project, "state", "list")

    assert result.exit_code == 1
    assert "Error: No state" in result.stderr


def test_show_prints_record(project: Path) -> None:
    ids = applied(project, "data")

    result = run(project, "state", "show", "volume.data")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "# volume.data:"
    assert f'id                    = "{ids["volume.data"]}"' in result.stdout
    assert "size_gb               = 100 (100GB)" in result.stdout


def test_show_json_is_the_record(project: Path) -> None:
    applied(project, "data")

    result = run(project, "state", "show", "volume.data", "--json")

    assert json.loads(result.stdout) == records(project)["volume.data"]


def test_show_unknown_address_fails(project: Path) -> None:
    applied(project, "data")

    result = run(project, "state", "show", "volume.nope")

    assert result.exit_code == 1
    assert "the state records no volume.nope" in result.stderr


def test_rm_forgets_and_keeps_volume(project: Path, provider: LocalProvider) -> None:
    ids = applied(project, "data", "logs")
    serial = state_file(project)["serial"]
    before = (project / STATE).read_text()

    result = run(project, "state", "rm", "volume.data")

    assert result.exit_code == 0, result.output
    assert set(records(project)) == {"volume.logs"}
    assert state_file(project)["serial"] == serial + 1
    assert provider.read_volume(ids["volume.data"]).id == ids["volume.data"]
    assert (project / (STATE + ".backup")).read_text() == before
    assert stat.S_IMODE(os.stat(project / STATE).st_mode) == 0o600
    assert f"volplan import volume.data {ids['volume.data']}" in result.stdout


def test_rm_unknown_address_changes_nothing(project: Path) -> None:
    applied(project, "data")
    before = (project / STATE).read_text()

    result = run(project, "state", "rm", "volume.data", "volume.nope")

    assert result.exit_code == 1
    assert "the state records no volume.nope" in result.stderr
    assert (project / STATE).read_text() == before


def test_rm_needs_lock(project: Path) -> None:
    applied(project, "data")
    before = (project / STATE).read_text()
    holder = _hold_lock(project / STATE)
    try:
        result = run(project, "state", "rm", "volume.data")
    finally:
        _stop(holder)

    assert result.exit_code == 1
    assert f"pid {holder.pid}" in result.stderr
    assert (project / STATE).read_text() == before


def test_rm_refuses_pending_journal(project: Path) -> None:
    applied(project, "data")
    lineage = state_file(project)["lineage"]
    journal = project / (STATE + ".journal")
    journal.write_text(
        json.dumps({"op": "begin", "lineage": lineage, "time": "t"})
        + "\n"
        + json.dumps(
            {"op": "intent", "seq": 1, "address": "volume.x", "action": "delete", "token": "vol-1", "time": "t"}
        )
        + "\n"
    )
    before = (project / STATE).read_text()

    result = run(project, "state", "rm", "volume.data")

    assert result.exit_code == 1
    assert "Interrupted apply pending" in result.stderr
    assert (project / STATE).read_text() == before


def test_mv_moves_record(project: Path) -> None:
    ids = applied(project, "data")

    result = run(project, "state", "mv", "volume.data", "volume.dataset")

    assert result.exit_code == 0, result.output
    moved = records(project)["volume.dataset"]
    assert set(records(project)) == {"volume.dataset"}
    assert moved["id"] == ids["volume.data"]
    assert moved["address"] == "volume.dataset"


def test_mv_then_rename_keeps_volume(project: Path, provider: LocalProvider) -> None:
    ids = applied(project, "data")
    run(project, "state", "mv", "volume.data", "volume.dataset")
    write(project, "data.dstack.yml", "type: volume\nname: dataset\nbackend: aws\nregion: eu-central-1\nsize: 100GB\n")

    result = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert "1 updated" in result.stdout
    assert provider.read_volume(ids["volume.data"]).name == "dataset"
    assert "pending_rename" not in records(project)["volume.dataset"]


def test_mv_marks_pending_rename(project: Path) -> None:
    applied(project, "data")

    run(project, "state", "mv", "volume.data", "volume.dataset")
    marked = records(project)["volume.dataset"]
    run(project, "state", "mv", "volume.dataset", "volume.data")
    back = records(project)["volume.data"]

    assert marked["name"] == "data"
    assert marked["pending_rename"] is True
    assert "pending_rename" not in back
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0


def test_mv_rejects_taken_address(project: Path) -> None:
    applied(project, "data", "logs")

    result = run(project, "state", "mv", "volume.data", "volume.logs")

    assert result.exit_code == 1
    assert "the state already records volume.logs" in result.stderr


def test_mv_rejects_invalid_name(project: Path) -> None:
    applied(project, "data")

    result = run(project, "state", "mv", "volume.data", "volume.Data_1")

    assert result.exit_code == 1
    assert "is not a valid volume name" in result.stderr


def test_mv_moves_nested_records(project: Path) -> None:
    applied(project, "data")
    (project / "train.dstack.yml").write_text("type: task\ncommands: [python train.py]\nvolumes:\n  - data:/data\n")
    assert run(project, "apply", "-y").exit_code == 0

    result = run(project, "state", "mv", "run.train", "run.finetune")

    assert result.exit_code == 0, result.output
    assert sorted(records(project)) == [
        "run.finetune",
        "run.finetune.node[0]",
        "run.finetune.node[0].mount[/data]",
        "volume.data",
    ]
    mount = records(project)["run.finetune.node[0].mount[/data]"]
    assert mount["run"] == "run.finetune"
    assert mount["node"] == "run.finetune.node[0]"


# import


def test_rm_then_import_round_trips(project: Path, provider: LocalProvider) -> None:
    ids = applied(project, "data", "logs")
    original = records(project)["volume.data"]
    run(project, "state", "rm", "volume.data")

    result = run(project, "import", "volume.data", ids["volume.data"], "-y")

    assert result.exit_code == 0, result.output
    assert records(project)["volume.data"] == original
    assert json.loads(run(project, "plan", "--json").stdout)["summary"]["no-op"] == 2


def test_import_explains_managed(project: Path) -> None:
    ids = applied(project, "data")
    run(project, "state", "rm", "volume.data")

    result = run(project, "import", "volume.data", ids["volume.data"], "-y")

    assert "# volume.data will be imported as a managed volume" in result.stdout
    assert "deletes it with its data" in result.stdout
    assert f"register it instead: replace size: with volume_id: {ids['volume.data']}" in result.stdout


def test_imported_volume_deleted_on_destroy(project: Path, provider: LocalProvider) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "other"), "t")
    volume_file(project, "data")

    run(project, "import", "volume.data", made.id, "-y")
    result = run(project, "destroy", "-y")

    assert result.exit_code == 0, result.output
    assert made.id not in provider.refresh_volumes([made.id])


def test_import_warns_other_lineage(project: Path, provider: LocalProvider) -> None:
    applied(project, "logs")
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "other"), "t")
    volume_file(project, "data")

    result = run(project, "import", "volume.data", made.id, "-y")

    assert "was created by another state (lineage other)" in result.stdout


def test_import_without_state_warns_lineage(project: Path, provider: LocalProvider) -> None:
    created = provider.create_volume(
        VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "other"), "t"
    )
    volume_file(project, "data")

    result = run(project, "import", "volume.data", created.id, "-y")

    assert result.exit_code == 0, result.output
    assert "was created by another state (lineage other)" in result.stdout


def test_import_rejects_registered_configuration(project: Path, provider: LocalProvider) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "l"), "t")
    write(
        project,
        "shared.dstack.yml",
        f"type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: {made.id}\n",
    )

    result = run(project, "import", "volume.shared", made.id, "-y")

    assert result.exit_code == 1
    assert "registers an external volume: volplan never deletes it" in result.stderr
    assert not (project / STATE).exists()


def test_import_rejects_other_region(project: Path, provider: LocalProvider) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "us-east-1", None, 100, {}, "l"), "t")
    volume_file(project, "data")

    result = run(project, "import", "volume.data", made.id, "-y")

    assert result.exit_code == 1
    assert "Volume is elsewhere" in result.stderr


def test_import_rejects_unknown_volume(project: Path) -> None:
    volume_file(project, "data")

    result = run(project, "import", "volume.data", "vol-0123456789abcdef0", "-y")

    assert result.exit_code == 1
    assert "Volume not found" in result.stderr


def test_import_rejects_recorded_address(project: Path) -> None:
    ids = applied(project, "data")

    result = run(project, "import", "volume.data", ids["volume.data"], "-y")

    assert result.exit_code == 1
    assert "the state already records volume.data" in result.stderr


def test_import_without_config_fails(project: Path, provider: LocalProvider) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "l"), "t")

    result = run(project, "import", "volume.data", made.id, "-y")

    assert result.exit_code == 1
    assert "no configuration defines volume.data" in result.stderr


def test_import_asks_on_terminal(project: Path, provider: LocalProvider) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "l"), "t")
    volume_file(project, "data")

    result = run_in_terminal(project, "import", "volume.data", made.id, answers=[("Enter a value", "no")])

    assert result.exit_code == 1
    assert "Import cancelled" in result.screen
    assert not (project / STATE).exists()


def test_import_input_false_fails(project: Path, provider: LocalProvider) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "outside", "aws", "eu-central-1", None, 100, {}, "l"), "t")
    volume_file(project, "data")

    result = run(project, "import", "volume.data", made.id, "-input=false")

    assert result.exit_code == 1
    assert "add --auto-approve (or -y)" in result.stderr
