"""Drift of runs on the local provider: a detach done by hand and a node stopped outside volplan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from providers.base import MountSpec
from providers.local import LocalProvider
from tests.conftest import run
from tests.test_runs import read_state, two_node_project


def _records(state: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {address: r for address, r in state.items() if r["kind"] == kind}


def test_detach_by_hand_is_drift(project: Path, local_root: Path) -> None:
    two_node_project(project)
    assert run(project, "apply", "-y").exit_code == 0
    mount = _records(read_state(project), "mount")["run.train.node[0].mount[/data]"]
    provider = LocalProvider(local_root)

    provider.detach_volume(
        MountSpec(node_id=mount["node_id"], path="/data", backend=mount["backend"], volume_id=mount["volume_id"]),
        force=True,
    )
    result = run(project, "drift", "--json")

    assert result.exit_code == 2, result.output
    kinds = {(d["address"], d["kind"]) for d in json.loads(result.stdout)["drift"]}
    assert ("run.train.node[0].mount[/data]", "detached") in kinds


def test_node_stopped_outside_is_drift(project: Path, local_root: Path) -> None:
    two_node_project(project)
    assert run(project, "apply", "-y").exit_code == 0
    node = _records(read_state(project), "node")["run.train.node[1]"]
    provider = LocalProvider(local_root)
    for mount in _records(read_state(project), "mount").values():
        if mount["node"] == node["address"]:
            spec = MountSpec(mount["node_id"], mount["path"], mount["backend"], volume_id=mount["volume_id"])
            provider.detach_volume(spec, force=True)

    provider.stop_node(node["id"])
    result = run(project, "drift", "--json")

    assert result.exit_code == 2, result.output
    kinds = {(d["address"], d["kind"]) for d in json.loads(result.stdout)["drift"]}
    assert ("run.train.node[1]", "node-gone") in kinds


def test_applied_runs_have_no_drift(project: Path, local_root: Path) -> None:
    two_node_project(project)
    assert run(project, "apply", "-y").exit_code == 0

    result = run(project, "drift")

    assert result.exit_code == 0, result.output
