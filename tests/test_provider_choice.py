"""Provider choice: --provider and volplan.yml pick the provider of each backend.

A volume stays with the provider that made it, and the plan explains how to move it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.actions import Action
from engine.project import load_project
from engine.workflow import PlanOptions, Workspace, apply, prepare
from providers.base import Provider
from providers.local import LocalProvider
from providers.registry import PROVIDER_KINDS, ProviderSet
from state.store import LocalStateStore
from tests.conftest import run, volume_file, write

STATE = "volplan.state.json"


def records(project: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    state = json.loads((project / STATE).read_text())
    return {record["address"]: record for record in state["resources"]}


class SecondLocalProvider(LocalProvider):
    """A second provider of the local kind's design, under its own root and kind name."""

    kind = "local-b"


def two_local_providers(tmp_path: Path, **kinds: str) -> ProviderSet:
    def factory(kind: str, options: Mapping[str, Any]) -> Provider:
        if kind == "local":
            return LocalProvider(tmp_path / "root-a")
        return SecondLocalProvider(tmp_path / "root-b")

    return ProviderSet(kinds=dict(kinds), factory=factory)


def workspace(project: Path, providers: ProviderSet) -> Workspace:
    return Workspace(project, LocalStateStore(project / STATE), providers)


def apply_all(project: Path, providers: ProviderSet) -> None:
    outcome = apply(
        workspace(project, providers),
        load_project(project),
        PlanOptions(),
        command="volplan apply",
        lock_timeout=0,
        parallelism=2,
        confirm=lambda prepared: True,
    )
    assert outcome.report is None or outcome.report.ok


def test_volume_stays_with_the_provider_that_made_it(project: Path, tmp_path: Path) -> None:
    volume_file(project, "data")
    apply_all(project, two_local_providers(tmp_path))
    made = records(project)["volume.data"]
    state_before = (project / STATE).read_bytes()
    switched = two_local_providers(tmp_path, aws="local-b")

    prepared = prepare(workspace(project, switched), load_project(project), PlanOptions())
    apply_all(project, switched)

    change = prepared.plan.changes[0]
    assert made["provider"] == "local"
    assert change.action is Action.NO_OP
    assert "made by the local provider, not by the local-b provider" in change.reason
    warning = " ".join(prepared.plan.warnings)
    assert "never hands a volume to another provider" in warning
    assert "--provider aws=local" in warning
    assert "To move it to the local-b provider" in warning
    assert "volplan delete -f data.dstack.yml" in warning
    assert (project / STATE).read_bytes() == state_before
    assert not list((tmp_path / "root-b").glob("vol-*"))


def test_new_volume_is_recorded_with_its_provider(project: Path, tmp_path: Path) -> None:
    volume_file(project, "data")
    apply_all(project, two_local_providers(tmp_path))
    volume_file(project, "fresh")

    apply_all(project, two_local_providers(tmp_path, aws="local-b"))

    recorded = records(project)
    assert recorded["volume.data"]["provider"] == "local"
    assert recorded["volume.fresh"]["provider"] == "local-b"
    assert (tmp_path / "root-b" / recorded["volume.fresh"]["id"]).is_dir()


def test_removal_goes_through_the_provider_that_made_it(project: Path, tmp_path: Path) -> None:
    path = volume_file(project, "data")
    apply_all(project, two_local_providers(tmp_path))
    volume_id = records(project)["volume.data"]["id"]
    path.unlink()

    apply_all(project, two_local_providers(tmp_path, aws="local-b"))

    assert records(project) == {}
    assert not (tmp_path / "root-a" / volume_id).exists()


@pytest.mark.skipif("aws" not in PROVIDER_KINDS, reason="this volplan has no aws provider kind to switch to")
def test_provider_flag_leaves_local_volume_alone(
    project: Path, local_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing here should reach AWS; if it did, these settings keep it on a closed local port.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)
    volume_file(project, "data")
    run(project, "apply", "-y")
    state_before = (project / STATE).read_bytes()

    planned = run(project, "plan", "--provider", "aws=aws")
    as_json = run(project, "plan", "--json", "--provider", "aws=aws")
    applied = run(project, "apply", "-y", "--provider", "aws=aws")

    assert planned.exit_code == 0, planned.output
    assert "made by the local provider" in planned.stdout
    assert "--provider aws=local" in planned.stdout
    change = json.loads(as_json.stdout)["changes"][0]
    assert change["action"] == "no-op"
    assert "made by the local provider" in change["reason"]
    assert applied.exit_code == 0, applied.output
    assert (project / STATE).read_bytes() == state_before
    assert (local_root / records(project)["volume.data"]["id"]).is_dir()


def test_settings_file_selects_provider(project: Path, local_root: Path) -> None:
    write(project, "volplan.yml", "providers:\n  aws:\n    kind: local\n")
    volume_file(project, "data")

    result = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert "No provider configured" not in result.stdout
    assert records(project)["volume.data"]["provider"] == "local"


def test_settings_file_rejects_unknown_kind(project: Path, local_root: Path) -> None:
    write(project, "volplan.yml", "providers:\n  aws:\n    kind: nimbus\n")
    volume_file(project, "data")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "volplan.yml:3" in result.stderr
    assert "nimbus" in result.stderr
    assert "is not a provider kind" in result.stderr


def test_provider_flag_rejects_unknown_kind(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "plan", "--provider", "aws=nimbus")

    assert result.exit_code == 1
    assert "Invalid value for --provider" in result.stderr
    assert "local" in result.stderr
