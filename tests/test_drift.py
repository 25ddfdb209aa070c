"""Drift and refresh: changes made outside volplan, found against the real local provider."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.drift import Drift, DriftKind, ProviderFacts, find_drift, refreshed_state
from providers.base import MountSpec, NodeSpec, VolumeFacts
from providers.local import LocalProvider
from state.model import State
from tests.conftest import run, volume_file

STATE = "volplan.state.json"
LINEAGE = "0e7a1c52-58b1-4bd4-9a3e-7d1b0c9f4e21"


def _volume(address: str, volume_id: str, size_gb: int = 10, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "address": address,
        "kind": "volume",
        "name": address.split(".")[1],
        "id": volume_id,
        "provider": "local",
        "backend": "aws",
        "external": False,
        "size_gb": size_gb,
        "tags": tags or {},
        "availability_zone": None,
    }


def _facts(
    volume_id: str, size_gb: int = 10, tags: dict[str, str] | None = None, attached: tuple[str, ...] = ()
) -> VolumeFacts:
    return VolumeFacts(
        volume_id, "aws", "eu-central-1", None, size_gb, tags or {}, "2026-01-01T00:00:00Z", attachments=attached
    )


def _state(*records: dict[str, Any]) -> State:
    return State(LINEAGE, 3, {record["address"]: record for record in records})


NODE = {"address": "run.train.node[0]", "kind": "node", "id": "i-node0"}
MOUNT = {"address": "run.train.node[0].mount[/data]", "kind": "mount", "volume_id": "vol-a"}


@pytest.mark.parametrize(
    ("records", "facts", "expected"),
    [
        ([_volume("volume.a", "vol-a")], ProviderFacts({"volume.a": _facts("vol-a")}), []),
        ([_volume("volume.a", "vol-a")], ProviderFacts({}), []),
        ([_volume("volume.a", "vol-a")], ProviderFacts({"volume.a": None}), [("volume.a", DriftKind.DELETED)]),
        (
            [_volume("volume.a", "vol-a", size_gb=10)],
            ProviderFacts({"volume.a": _facts("vol-a", size_gb=20)}),
            [("volume.a", DriftKind.RESIZED)],
        ),
        (
            [_volume("volume.a", "vol-a", tags={"team": "ml"})],
            ProviderFacts({"volume.a": _facts("vol-a", tags={"team": "ops"})}),
            [("volume.a", DriftKind.RETAGGED)],
        ),
        (
            [_volume("volume.a", "vol-a")],
            ProviderFacts({"volume.a": _facts("vol-a", attached=("i-stranger",))}),
            [("volume.a", DriftKind.ATTACHED_ELSEWHERE)],
        ),
        (
            [_volume("volume.a", "vol-a"), NODE, MOUNT],
            ProviderFacts({"volume.a": _facts("vol-a", attached=("i-node0",))}, {"run.train.node[0]": True}),
            [],
        ),
        (
            [_volume("volume.a", "vol-a"), NODE, MOUNT],
            ProviderFacts({"volume.a": _facts("vol-a")}, {"run.train.node[0]": True}),
            [("run.train.node[0].mount[/data]", DriftKind.DETACHED)],
        ),
        (
            [_volume("volume.a", "vol-a"), NODE, MOUNT],
            ProviderFacts({"volume.a": _facts("vol-a", attached=("i-node0", "i-other"))}),
            [("volume.a", DriftKind.ATTACHED_ELSEWHERE)],
        ),
        (
            [_volume("volume.a", "vol-a"), NODE, MOUNT],
            ProviderFacts({"volume.a": _facts("vol-a")}, {"run.train.node[0]": False}),
            [("run.train.node[0]", DriftKind.NODE_GONE), ("run.train.node[0].mount[/data]", DriftKind.DETACHED)],
        ),
        (
            [_volume("volume.a", "vol-a", size_gb=10, tags={}), {**MOUNT, "node_id": "i-direct"}],
            ProviderFacts({"volume.a": _facts("vol-a", size_gb=30, tags={"k": "v"}, attached=("i-direct",))}),
            [("volume.a", DriftKind.RESIZED), ("volume.a", DriftKind.RETAGGED)],
        ),
    ],
    ids=[
        "matches",
        "not-refreshed",
        "deleted",
        "resized",
        "retagged",
        "attached-to-unknown-instance",
        "mount-attached-as-recorded",
        "detached-by-hand",
        "also-attached-elsewhere",
        "node-gone",
        "resized-and-retagged",
    ],
)
def test_find_drift_cases(
    records: list[dict[str, Any]], facts: ProviderFacts, expected: list[tuple[str, DriftKind]]
) -> None:
    found = find_drift(_state(*records), facts)

    assert [(item.address, item.kind) for item in found] == expected


def test_refreshed_state_records_facts() -> None:
    state = _state(
        _volume("volume.gone", "vol-g"),
        _volume("volume.grown", "vol-b", size_gb=10, tags={"a": "1"}),
        _volume("volume.elsewhere", "vol-c"),
    )
    facts = ProviderFacts(
        {
            "volume.gone": None,
            "volume.grown": _facts("vol-b", size_gb=50, tags={"a": "2"}),
            "volume.elsewhere": _facts("vol-c", attached=("i-x",)),
        }
    )

    drift: list[Drift] = find_drift(state, facts)
    refreshed = refreshed_state(state, drift)

    assert "volume.gone" not in refreshed.resources
    assert refreshed.resources["volume.grown"]["size_gb"] == 50
    assert refreshed.resources["volume.grown"]["tags"] == {"a": "2"}
    assert refreshed.resources["volume.elsewhere"] == state.resources["volume.elsewhere"]
    assert state.resources["volume.grown"]["size_gb"] == 10


def _applied(project: Path, *names: str) -> dict[str, str]:
    """Apply one volume per name; return their ids by name."""
    for name in names:
        volume_file(project, name, size="10GB", extra="tags:\n  team: ml\n")
    result = run(project, "apply", "-y")
    assert result.exit_code == 0, result.output
    state = json.loads((project / STATE).read_text())
    return {record["name"]: record["id"] for record in state["resources"]}


def _edit_metadata(local_root: Path, volume_id: str, **changes: Any) -> None:
    """Change a local volume the way a person working outside volplan would: in its folder."""
    path = local_root / volume_id / "volume.json"
    metadata = json.loads(path.read_text())
    metadata.update(changes)
    path.write_text(json.dumps(metadata))


def _attach_outside_state(local_root: Path, volume_id: str) -> str:
    """Attach the volume to a node that another project started; return the node's id."""
    provider = LocalProvider(local_root)
    node = NodeSpec("run.other.node[0]", "run.other", 0, "aws", "eu-central-1", None, "another-lineage")
    node_id = provider.start_node(node, token="other-project").id
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id=volume_id))
    return node_id


def _drift_json(project: Path) -> tuple[int, dict[str, Any]]:
    result = run(project, "drift", "--json")
    return result.exit_code, json.loads(result.stdout)


def test_no_drift_exits_zero(project: Path, local_root: Path) -> None:
    _applied(project, "data")

    result = run(project, "drift")

    assert result.exit_code == 0, result.output
    assert "No drift." in result.stdout
    assert "The 1 resource in the state matches what the providers report." in result.stdout


def test_drift_without_state_exits_zero(project: Path, local_root: Path) -> None:
    result = run(project, "drift")

    assert result.exit_code == 0, result.output
    assert "nothing to compare" in result.stdout


def test_volume_deleted_out_of_band(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data", "keep")
    shutil.rmtree(local_root / ids["data"])

    code, document = _drift_json(project)

    assert code == 2
    assert [(d["address"], d["kind"], d["resource_id"]) for d in document["drift"]] == [
        ("volume.data", "deleted", ids["data"])
    ]
    assert document["summary"]["checked"] == 2
    assert document["summary"]["drifted"] == 1


def test_destroy_with_edited_volume_id_completes(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data", "keep")
    state_path = project / "volplan.state.json"
    state = json.loads(state_path.read_text())
    for record in state["resources"]:
        if record["address"] == "volume.data":
            record["id"] = "~"
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")

    result = run(project, "destroy", "-y")

    assert result.exit_code == 0, result.output
    assert "volume ~ was deleted outside volplan" in result.stdout
    assert json.loads(state_path.read_text())["resources"] == []
    assert not (local_root / ids["keep"]).exists()
    assert (local_root / ids["data"]).exists()


def test_volume_resized_out_of_band(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data")
    _edit_metadata(local_root, ids["data"], size_gb=25)

    code, document = _drift_json(project)
    human = run(project, "drift")

    assert code == 2
    assert document["drift"] == [
        {"address": "volume.data", "kind": "resized", "resource_id": ids["data"], "expected": 10, "actual": 25}
    ]
    assert human.exit_code == 2
    assert f"volume.data: volume {ids['data']} was resized outside volplan: 10GB -> 25GB" in human.stdout


def test_volume_retagged_out_of_band(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data")
    _edit_metadata(local_root, ids["data"], tags={"team": "ops"})

    code, document = _drift_json(project)

    assert code == 2
    assert [(d["kind"], d["expected"], d["actual"]) for d in document["drift"]] == [
        ("retagged", {"team": "ml"}, {"team": "ops"})
    ]


def test_volume_attached_elsewhere(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data")
    holder = _attach_outside_state(local_root, ids["data"])

    code, document = _drift_json(project)
    human = run(project, "drift")

    assert code == 2
    assert [(d["kind"], d["actual"]) for d in document["drift"]] == [("attached-elsewhere", [holder])]
    assert f"attached to {holder}" in human.stdout


def test_drift_writes_nothing(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data")
    shutil.rmtree(local_root / ids["data"])
    before = sorted(path.name for path in project.iterdir())
    state_bytes = (project / STATE).read_bytes()

    assert run(project, "drift").exit_code == 2

    assert sorted(path.name for path in project.iterdir()) == before
    assert (project / STATE).read_bytes() == state_bytes


def test_drift_on_damaged_state_exits_one(project: Path, local_root: Path) -> None:
    (project / STATE).write_text('{"version": 1, "lineage": ')

    result = run(project, "drift", "--json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Damaged state file" in result.stderr


def test_plan_shows_drift_before_changes(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data", "logs")
    _edit_metadata(local_root, ids["logs"], tags={"team": "ops"})
    volume_file(project, "data", size="20GB", extra="tags:\n  team: ml\n")

    result = run(project, "plan")

    assert result.exit_code == 0, result.output
    drift_at = result.stdout.index("Objects have changed outside volplan")
    retag_at = result.stdout.index(f"volume.logs: tags of volume {ids['logs']} changed outside volplan")
    changes_at = result.stdout.index("volplan will perform the following actions:")
    assert drift_at < retag_at < changes_at
    assert "Plan: 2 to update." in result.stdout


def test_plan_without_drift_has_no_drift_section(project: Path, local_root: Path) -> None:
    _applied(project, "data")

    result = run(project, "plan")

    assert "outside volplan" not in result.stdout


def test_refresh_writes_facts(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data", "gone", "grown")
    shutil.rmtree(local_root / ids["gone"])
    _edit_metadata(local_root, ids["grown"], size_gb=40)
    before = json.loads((project / STATE).read_text())

    result = run(project, "refresh", "-y")

    assert result.exit_code == 0, result.output
    assert "State refreshed: 2 resources updated" in result.stdout
    after = json.loads((project / STATE).read_text())
    by_address = {record["address"]: record for record in after["resources"]}
    assert set(by_address) == {"volume.data", "volume.grown"}
    assert by_address["volume.grown"]["size_gb"] == 40
    assert after["serial"] == before["serial"] + 1
    assert json.loads((project / f"{STATE}.backup").read_text()) == before
    assert run(project, "drift").exit_code == 0


def test_refresh_without_terminal_writes_nothing(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data")
    _edit_metadata(local_root, ids["data"], size_gb=40)
    before = (project / STATE).read_bytes()

    plain = run(project, "refresh")
    no_input = run(project, "refresh", "-input=false")

    assert plain.exit_code == 1
    assert "--auto-approve" in plain.stderr
    assert no_input.exit_code == 1
    assert "--input=false" in no_input.stderr
    assert (project / STATE).read_bytes() == before


def test_refresh_answer_other_than_yes_cancels(project: Path, local_root: Path) -> None:
    ids = _applied(project, "data")
    _edit_metadata(local_root, ids["data"], size_gb=40)
    before = (project / STATE).read_bytes()

    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"no\n")
        result = subprocess.run(
            [sys.executable, "-m", "engine", "refresh"],
            cwd=project,
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Only 'yes' will be accepted" in result.stdout
    assert "Refresh cancelled" in result.stderr
    assert (project / STATE).read_bytes() == before


def test_refresh_without_drift_writes_nothing(project: Path, local_root: Path) -> None:
    _applied(project, "data")
    before = (project / STATE).read_bytes()

    result = run(project, "refresh", "-y")

    assert result.exit_code == 0, result.output
    assert "No drift." in result.stdout
    assert (project / STATE).read_bytes() == before
