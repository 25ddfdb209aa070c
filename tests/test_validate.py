"""`volplan validate`: every error of every file with its line, and each run's rendered nodes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run, run_process, volume_file, write


def test_three_mistakes_reported_with_lines(project: Path) -> None:
    write(
        project,
        "data.dstack.yml",
        """
        type: volume
        name: Data
        backend: aws
        region: eu-central-1
        size: 100.5GB
        regoin: eu-west-1
        """,
    )

    result = run_process(project, "validate")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "3 configuration errors" in result.stderr
    assert "data.dstack.yml:2:7: name: is not a valid volume name" in result.stderr
    assert "data.dstack.yml:5:7: size: is 100.5 GB, not a whole number of GB" in result.stderr
    assert "data.dstack.yml:6:1: regoin: is not a field" in result.stderr
    assert "Did you mean region?" in result.stderr


def test_errors_of_all_files_collected(project: Path) -> None:
    write(project, "a.dstack.yml", "type: volume\nname: a1\nbackend: aws\nregion: r\nsize: 0\n")
    write(project, "b.dstack.yml", "type: task\ncommands: [x]\nvolumes:\n  - data:/workflow\n")
    write(project, "c.dstack.yml", "type: task\ncommands: [x]\ncommands: [y]\n")

    result = run(project, "validate", "--json")

    assert result.exit_code == 1
    errors = json.loads(result.stdout)["errors"]
    assert [(error["file"], error["line"], error["field"]) for error in errors] == [
        ("a.dstack.yml", 5, "size"),
        ("b.dstack.yml", 4, "volumes[0]"),
        ("c.dstack.yml", 3, "commands"),
    ]
    assert all(error["fix"] and error["message"].startswith(error["file"]) for error in errors)


def test_two_node_task_lists_rendered_names(project: Path) -> None:
    write(
        project,
        "train.dstack.yml",
        """
        type: task
        nodes: 2
        commands: [python train.py]
        volumes:
          - data-$<< dstack.node_rank >>:/data
          - /mnt/cache:/cache
        """,
    )

    result = run(project, "validate", "--json")

    assert result.exit_code == 0, result.output
    [train] = json.loads(result.stdout)["runs"]
    assert train["address"] == "run.train"
    assert [node["address"] for node in train["nodes"]] == ["run.train.node[0]", "run.train.node[1]"]
    data_mounts = [node["mounts"][0] for node in train["nodes"]]
    assert [mount["volume_names"] for mount in data_mounts] == [["data-0"], ["data-1"]]
    assert data_mounts[1]["address"] == "run.train.node[1].mount[/data]"
    assert train["nodes"][1]["mounts"][1] == {
        "address": "run.train.node[1].mount[/cache]",
        "path": "/cache",
        "instance_path": "/mnt/cache",
        "optional": False,
    }


def test_duplicate_volume_names_across_files(project: Path) -> None:
    volume_file(project, "shared")
    write(project, "other.dstack.yml", "type: volume\nname: shared\nbackend: gcp\nregion: r\nsize: 1\n")

    result = run(project, "validate")

    assert result.exit_code == 1
    assert "shared.dstack.yml:2:7: name: is already the name of the volume in other.dstack.yml:2" in result.stderr


def test_validate_touches_no_state(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "validate")

    assert result.exit_code == 0
    assert "Valid: 1 file, 1 volume, 0 runs." in result.stdout
    assert not (project / "volplan.state.json").exists()
    assert not local_root.exists()


def test_validate_selected_file_only(project: Path) -> None:
    volume_file(project, "data")
    write(project, "broken.dstack.yml", "type: volume\n")

    assert run(project, "validate", "-f", "data.dstack.yml").exit_code == 0
    assert run(project, "validate").exit_code == 1
