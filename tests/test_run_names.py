"""Run names and mount paths that volplan's addresses depend on."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.project import run_name_for
from engine.run_config import RunConfiguration
from tests.conftest import run, write


def test_bare_file_at_root_named_after_project(tmp_path: Path, local_root: Path) -> None:
    project = tmp_path / "finetune"
    write(project, ".dstack.yml", "type: task\ncommands: [python train.py]\n")

    result = run(project, "validate", "--json")

    assert result.exit_code == 0, result.output
    assert '"address": "run.finetune"' in result.stdout


def test_invalid_folder_name_needs_a_name(tmp_path: Path, local_root: Path) -> None:
    project = tmp_path / "My Proj"
    write(project, ".dstack.yml", "type: task\ncommands: [python train.py]\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "'My Proj'" in result.stderr
    assert "Add name:" in result.stderr


def test_mount_path_with_brackets_rejected(project: Path, local_root: Path) -> None:
    write(project, "train.dstack.yml", "type: task\ncommands: [x]\nvolumes:\n  - data:/a]b\n")

    result = run(project, "validate")

    assert result.exit_code == 1
    assert "train.dstack.yml:4" in result.stderr
    assert "[ or ]" in result.stderr


def test_validate_lists_each_service_replica(project: Path, local_root: Path) -> None:
    write(project, "svc.dstack.yml", "type: service\nport: 8000\ncommands: [serve]\nreplicas: 2\n")

    result = run(project, "validate", "--json")

    assert result.exit_code == 0, result.output
    assert '"address": "run.svc.node[0]"' in result.stdout
    assert '"address": "run.svc.node[1]"' in result.stdout


def test_unmatched_protect_entry_warns(project: Path, local_root: Path) -> None:
    write(project, "dataset.dstack.yml", "type: volume\nname: dataset\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n")
    write(project, "volplan.yml", "protect:\n  - volume.datasett\n")

    result = run(project, "plan")

    assert result.exit_code == 0, result.output
    assert "protect: lists volume.datasett" in result.stdout


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("train.dstack.yml", "train"),
        ("a/b/train.dstack.yaml", "train"),
        ("a/b/.dstack.yml", "b"),
        ("a/.dstack.yaml", "a"),
        (".dstack.yml", "project"),
    ],
)
def test_run_name_from_file_path(tmp_path: Path, file: str, expected: str) -> None:
    root = tmp_path / "project"
    root.mkdir()
    config = RunConfiguration(type="task", name=None, body={})

    assert run_name_for(file, config, root) == expected
