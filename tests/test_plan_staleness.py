"""Saved plans stay valid while the resources they read or change are unchanged.

Volume names need two characters at least, so volumes `alpha` and `beta` stand
in for two unrelated volumes a and b.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run, volume_file

STATE = "volplan.state.json"


@pytest.fixture(autouse=True)
def _work_in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)


def sizes(project: Path) -> dict[str, int]:
    state = json.loads((project / STATE).read_text())
    return {record["address"]: record["size_gb"] for record in state["resources"]}


def plan_to_grow_alpha(project: Path) -> None:
    """Apply volumes alpha and beta at 10 GB, then save a plan that grows only alpha to 20 GB."""
    volume_file(project, "alpha", size="10GB")
    volume_file(project, "beta", size="10GB")
    assert run(project, "apply", "-y").exit_code == 0
    volume_file(project, "alpha", size="20GB")
    planned = run(project, "plan", "--out", "grow-alpha.plan")
    assert planned.exit_code == 0, planned.output


def test_unrelated_apply_keeps_plan_valid(project: Path, local_root: Path) -> None:
    plan_to_grow_alpha(project)
    volume_file(project, "beta", size="30GB")
    other = run(project, "apply", "-f", "beta.dstack.yml", "-y")
    serial_before = json.loads((project / STATE).read_text())["serial"]

    result = run(project, "apply", "grow-alpha.plan")

    assert other.exit_code == 0, other.output
    assert result.exit_code == 0, result.output
    assert sizes(project) == {"volume.alpha": 20, "volume.beta": 30}
    assert json.loads((project / STATE).read_text())["serial"] == serial_before + 1


def test_plan_rejected_when_its_volume_moved(project: Path, local_root: Path) -> None:
    plan_to_grow_alpha(project)
    volume_file(project, "alpha", size="40GB")
    other = run(project, "apply", "-f", "alpha.dstack.yml", "-y")
    state_before = (project / STATE).read_bytes()

    result = run(project, "apply", "grow-alpha.plan")

    assert other.exit_code == 0, other.output
    assert result.exit_code == 1
    assert "Saved plan is stale" in result.stderr
    assert "volume.alpha changed since the plan was made" in result.stderr
    assert "volume.beta" not in result.stderr
    assert (project / STATE).read_bytes() == state_before
    assert sizes(project) == {"volume.alpha": 40, "volume.beta": 10}


def test_plan_rejected_when_created_elsewhere(project: Path, local_root: Path) -> None:
    volume_file(project, "alpha", size="10GB")
    assert run(project, "apply", "-y").exit_code == 0
    volume_file(project, "gamma", size="10GB")
    assert run(project, "plan", "--out", "create-gamma.plan").exit_code == 0
    assert run(project, "apply", "-f", "gamma.dstack.yml", "-y").exit_code == 0

    result = run(project, "apply", "create-gamma.plan")

    assert result.exit_code == 1
    assert "volume.gamma was added to the state since the plan was made" in result.stderr


def test_plan_rejected_when_deleted_elsewhere(project: Path, local_root: Path) -> None:
    volume_file(project, "alpha", size="10GB")
    volume_file(project, "beta", size="10GB")
    assert run(project, "apply", "-y").exit_code == 0
    (project / "beta.dstack.yml").unlink()
    assert run(project, "plan", "--out", "delete-beta.plan").exit_code == 0
    assert run(project, "volume", "delete", "beta", "-y").exit_code == 0

    result = run(project, "apply", "delete-beta.plan")

    assert result.exit_code == 1
    assert "volume.beta was removed from the state since the plan was made" in result.stderr


def test_plan_file_records_fingerprints(project: Path, local_root: Path) -> None:
    plan_to_grow_alpha(project)

    document = json.loads((project / "grow-alpha.plan").read_text())

    assert document["format_version"] == 2
    assert list(document["state"]["resources"]) == ["volume.alpha"]
    assert len(document["state"]["resources"]["volume.alpha"]) == 64
