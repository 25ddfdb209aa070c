"""Runs, placement and attachments end to end on real folders, through the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import networkx as nx

from engine.planner import PlanInput, make_plan
from engine.project import load_project
from engine.workflow import PlanOptions, Workspace, prepare
from providers.base import Capabilities, MountSpec, NodeSpec
from providers.local import LocalProvider, local_capabilities
from providers.registry import ProviderSet
from state.store import LocalStateStore
from tests.conftest import run, volume_file, write

STATE = "volplan.state.json"
TWO_NODE_TASK = """
type: task
nodes: 2
commands: [python train.py]
volumes:
  - data-$<< dstack.node_rank >>:/data
"""


def read_state(project: Path) -> dict[str, Any]:
    return {r["address"]: r for r in json.loads((project / STATE).read_text())["resources"]}


def json_plan(project: Path, *args: str) -> list[dict[str, Any]]:
    result = run(project, "plan", "--json", *args)
    assert result.exit_code == 0, result.output
    changes: list[dict[str, Any]] = json.loads(result.stdout)["changes"]
    return changes


def actionable(changes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["action"], c["address"]) for c in changes if c["action"] != "no-op"]


def two_node_project(project: Path, stop_duration: str | None = None) -> None:
    volume_file(project, "data-0", region="eu-west-1", size="10GB")
    volume_file(project, "data-1", region="eu-west-1", size="10GB")
    extra = f"stop_duration: {stop_duration}\n" if stop_duration else ""
    write(project, "train.dstack.yml", TWO_NODE_TASK + extra)


def node_root(local_root: Path, state: dict[str, Any], address: str) -> Path:
    return local_root / "nodes" / state[address]["id"] / "root"


def test_two_node_task_plans_one_mount_per_node(project: Path, local_root: Path) -> None:
    two_node_project(project)

    changes = json_plan(project)

    mounts = {c["address"]: c for c in changes if c["address"].endswith(".mount[/data]")}
    assert sorted(mounts) == ["run.train.node[0].mount[/data]", "run.train.node[1].mount[/data]"]
    assert mounts["run.train.node[0].mount[/data]"]["after"]["volume"] == "data-0"
    assert mounts["run.train.node[1].mount[/data]"]["after"]["volume"] == "data-1"
    assert all(c["action"] == "create" for c in mounts.values())
    run_change = next(c for c in changes if c["address"] == "run.train")
    assert run_change["reason"] == "placed in aws/eu-west-1 because data-0 is there"


def test_two_node_graph_orders_creates_before_attach(project: Path, local_root: Path) -> None:
    two_node_project(project)
    workspace = Workspace(project, LocalStateStore(project / STATE), ProviderSet())

    graph = prepare(workspace, load_project(project), PlanOptions()).graph

    for rank in (0, 1):
        mount = f"run.train.node[{rank}].mount[/data]"
        assert nx.has_path(graph, f"volume.data-{rank}", mount)
        assert nx.has_path(graph, f"run.train.node[{rank}]", mount)
    assert not nx.has_path(graph, "volume.data-0", "run.train.node[1].mount[/data]")


def test_two_node_apply_attaches_each_node(project: Path, local_root: Path) -> None:
    two_node_project(project)

    applied = run(project, "apply", "-y")

    assert applied.exit_code == 0, applied.output
    assert "Volumes: 2 created; Nodes: 2 started; Mounts: 2 attached" in applied.stdout
    lines = applied.stdout.splitlines()
    for rank in (0, 1):
        created = lines.index(next(line for line in lines if line.startswith(f"volume.data-{rank}: Creation complete")))
        started = lines.index(
            next(line for line in lines if line.startswith(f"run.train.node[{rank}]: Start complete"))
        )
        attaching = lines.index(f"run.train.node[{rank}].mount[/data]: Attaching...")
        assert created < attaching
        assert started < attaching

    state = read_state(project)
    provider = LocalProvider(local_root)
    for rank in (0, 1):
        node = state[f"run.train.node[{rank}]"]
        volume = state[f"volume.data-{rank}"]
        mount = state[f"run.train.node[{rank}].mount[/data]"]
        assert mount["volume_id"] == volume["id"]
        assert provider.read_volume(volume["id"]).attachments == (node["id"],)
        link = node_root(local_root, state, f"run.train.node[{rank}]") / "data"
        assert link.resolve() == provider.volume_data_path(volume["id"]).resolve()

    planned = run(project, "plan", "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output
    assert "No changes." in planned.stdout


def test_state_records_reference_volume_ids_only(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")

    state = read_state(project)

    assert {r["kind"] for r in state.values()} == {"volume", "run", "node", "mount"}
    allowed = {"volume": ["id"], "mount": ["volume_id"]}
    for record in state.values():
        holding = sorted(k for k, v in record.items() if isinstance(v, str) and v.startswith("vol-"))
        assert holding == allowed.get(record["kind"], [])
    for address, record in state.items():
        if record["kind"] == "mount":
            assert state[f"volume.{record['volume']}"]["id"] == record["volume_id"], address


def test_data_persists_across_runs(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    state = read_state(project)
    (node_root(local_root, state, "run.train.node[0]") / "data" / "checkpoint.txt").write_text("epoch 3")
    old_node = state["run.train.node[0]"]["id"]
    run_file = project / "train.dstack.yml"
    text = run_file.read_text()

    run_file.unlink()
    removed = run(project, "apply", "-y")

    assert removed.exit_code == 0, removed.output
    assert "Nodes: 2 stopped; Mounts: 2 detached" in removed.stdout
    assert not (local_root / "nodes" / old_node).exists()
    assert not any(address.startswith("run.") for address in read_state(project))

    run_file.write_text(text)
    restored = run(project, "apply", "-y")

    assert restored.exit_code == 0, restored.output
    state = read_state(project)
    assert state["run.train.node[0]"]["id"] != old_node
    assert (node_root(local_root, state, "run.train.node[0]") / "data" / "checkpoint.txt").read_text() == "epoch 3"
    assert not (node_root(local_root, state, "run.train.node[1]") / "data" / "checkpoint.txt").exists()


def test_run_removal_detaches_before_stop(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    (project / "train.dstack.yml").unlink()

    removed = run(project, "apply", "-y")

    lines = removed.stdout.splitlines()
    assert lines.index("run.train.node[0].mount[/data]: Detaching...") < lines.index("run.train.node[0]: Stopping...")
    assert "# run.train.node[0] will be stopped" in removed.stdout
    assert "# run.train.node[0].mount[/data] will be detached" in removed.stdout


# Placement


def placement_project(project: Path, regions: str) -> None:
    volume_file(project, "data-eu", region="eu-west-1", size="10GB")
    volume_file(project, "data-us", region="us-east-1", size="10GB")
    write(
        project,
        "dev.dstack.yml",
        f"""
        type: dev-environment
        ide: vscode
        regions: {regions}
        volumes:
          - name: [data-eu, data-us]
            path: /data
        """,
    )


def test_listed_volumes_follow_regions(project: Path, local_root: Path) -> None:
    placement_project(project, "[us-east-1]")

    changes = json_plan(project)

    mount = next(c for c in changes if c["address"] == "run.dev.node[0].mount[/data]")
    assert mount["after"]["volume"] == "data-us"
    run_change = next(c for c in changes if c["address"] == "run.dev")
    assert run_change["reason"] == "placed in aws/us-east-1 because data-us is there"
    assert run(project, "apply", "-y").exit_code == 0
    state = read_state(project)
    assert LocalProvider(local_root).read_volume(state["volume.data-eu"]["id"]).attachments == ()
    assert LocalProvider(local_root).read_volume(state["volume.data-us"]["id"]).attachments == (
        state["run.dev.node[0]"]["id"],
    )


def test_first_listed_volume_wins_without_constraint(project: Path, local_root: Path) -> None:
    placement_project(project, "[]")

    changes = json_plan(project)

    run_change = next(c for c in changes if c["address"] == "run.dev")
    assert run_change["reason"] == "placed in aws/eu-west-1 because data-eu is there"


def test_unreachable_region_fails_naming_mount(project: Path, local_root: Path) -> None:
    placement_project(project, "[ap-south-1]")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "dev.dstack.yml: run.dev: mount /data" in result.stderr
    assert "regions: [ap-south-1]" in result.stderr
    assert "aws/eu-west-1 (data-eu), aws/us-east-1 (data-us)" in result.stderr
    assert "Traceback" not in result.output


def test_run_without_volumes_goes_to_default_region(project: Path, local_root: Path) -> None:
    write(project, "dev.dstack.yml", "type: dev-environment\nide: vscode\n")

    changes = json_plan(project)

    run_change = next(c for c in changes if c["address"] == "run.dev")
    assert run_change["after"]["backend"] == "local"
    assert run_change["after"]["region"] == "local-1"
    assert "no backend, region or network volume constrains it" in run_change["reason"]
    assert "default provider's first region" in run_change["reason"]


def test_mounts_in_other_regions_fail(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-west-1", size="10GB")
    volume_file(project, "cache", region="us-east-1", size="10GB")
    write(project, "dev.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [data:/data, cache:/cache]\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "mount /cache lists volumes in aws/us-east-1" in result.stderr
    assert "first mount /data lists volumes in aws/eu-west-1" in result.stderr


def test_path_and_volume_conflicts_fail(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-west-1", size="10GB")
    volume_file(project, "other", region="eu-west-1", size="10GB")
    write(project, "a.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [data:/data, other:/data]\n")
    write(project, "b.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [other:/x, other:/y]\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "run.a: two mounts share the path /data" in result.stderr
    assert "run.b: volume other is mounted at both /x and /y" in result.stderr


def test_zones_of_one_run_must_match_on_aws(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-west-1", size="10GB", extra="availability_zone: eu-west-1a\n")
    volume_file(project, "cache", region="eu-west-1", size="10GB", extra="availability_zone: eu-west-1b\n")
    write(project, "dev.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [data:/data, cache:/cache]\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "different availability zones (eu-west-1a, eu-west-1b) of eu-west-1" in result.stderr


def test_node_zone_follows_first_volume(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-west-1", size="10GB", extra="availability_zone: eu-west-1b\n")
    write(project, "dev.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [data:/data]\n")

    assert run(project, "apply", "-y").exit_code == 0

    state = read_state(project)
    assert state["run.dev.node[0]"]["availability_zone"] == "eu-west-1b"


# Backend rules


def runpod_project(project: Path, optional: bool) -> None:
    volume_file(project, "pod-data", backend="runpod", region="EU-RO-1", size="10GB")
    write(
        project,
        "svc.dstack.yml",
        f"""
        type: service
        port: 8000
        commands: [serve]
        replicas: 2..4
        scaling:
          metric: rps
          target: 10
        volumes:
          - pod-data:/data
          - instance_path: /mnt/cache
            path: /cache
            optional: {str(optional).lower()}
        """,
    )


def test_optional_instance_mount_skipped_on_runpod(project: Path, local_root: Path) -> None:
    runpod_project(project, optional=True)

    applied = run(project, "apply", "-y")

    assert applied.exit_code == 0, applied.output
    assert "Warning: run.svc.node[0].mount[/cache]: the optional instance mount /mnt/cache is skipped" in applied.stdout
    state = read_state(project)
    assert state["run.svc.node[0].mount[/cache]"]["skipped"] is True
    assert not (node_root(local_root, state, "run.svc.node[0]") / "cache").exists()
    # Two replicas (the lower bound of 2..4), both rank 0, share the runpod volume.
    volume = LocalProvider(local_root).read_volume(state["volume.pod-data"]["id"])
    assert set(volume.attachments) == {state["run.svc.node[0]"]["id"], state["run.svc.node[1]"]["id"]}

    again = run(project, "plan", "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "skipped" not in again.stdout


def test_required_instance_mount_refused_on_runpod(project: Path, local_root: Path) -> None:
    runpod_project(project, optional=False)

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "mount /mnt/cache:/cache: runpod has no instance volumes" in result.stderr
    assert "optional: true" in result.stderr


def test_runpod_run_mounts_one_network_volume(project: Path, local_root: Path) -> None:
    volume_file(project, "pod-a", backend="runpod", region="EU-RO-1", size="10GB")
    volume_file(project, "pod-b", backend="runpod", region="EU-RO-1", size="10GB")
    write(project, "t.dstack.yml", "type: task\ncommands: [x]\nvolumes: [pod-a:/a, pod-b:/b]\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "on runpod a run mounts at most 1" in result.stderr


def test_instance_mount_lands_in_simulated_host(project: Path, local_root: Path) -> None:
    write(project, "dev.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [/mnt/cache:/cache]\n")
    assert run(project, "apply", "-y").exit_code == 0
    state = read_state(project)

    (node_root(local_root, state, "run.dev.node[0]") / "cache" / "model.bin").write_text("weights")

    host = local_root / "nodes" / state["run.dev.node[0]"]["id"] / "host"
    assert (host / "mnt" / "cache" / "model.bin").read_text() == "weights"
    assert not Path("/mnt/cache/model.bin").exists()


def test_two_nodes_on_one_volume_fail_before_attach(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-west-1", size="10GB")
    write(project, "train.dstack.yml", "type: task\nnodes: 2\ncommands: [x]\nvolumes: [data:/data]\n")

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "volume.data would be attached to run.train.node[0], run.train.node[1]" in result.stderr
    assert "one node at a time" in result.stderr
    assert not (project / STATE).exists()


def test_volume_held_outside_state_conflicts(project: Path, local_root: Path) -> None:
    volume_file(project, "data", region="eu-west-1", size="10GB")
    assert run(project, "apply", "-y").exit_code == 0
    provider = LocalProvider(local_root)
    stranger = provider.start_node(NodeSpec("other", "run.other", 0, "aws", "eu-west-1", None, "x"), token="t")
    volume_id = read_state(project)["volume.data"]["id"]
    provider.attach_volume(MountSpec(stranger.id, "/data", "aws", volume_id=volume_id))
    write(project, "dev.dstack.yml", "type: dev-environment\nide: vscode\nvolumes: [data:/data]\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert f"volume data ({volume_id}) is attached to {stranger.id}" in result.stderr
    assert "which this state does not manage" in result.stderr


# Volumes in use


def test_removing_used_volume_lists_consumers(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    before = (project / STATE).read_bytes()
    (project / "data-0.dstack.yml").unlink()

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "volume.data-0 cannot be deleted while runs use it" in result.stderr
    assert "run.train.node[0].mount[/data] (train.dstack.yml)" in result.stderr
    assert result.stderr.count("run.train.node[0].mount[/data]") == 1
    assert (project / STATE).read_bytes() == before


def test_deleting_volume_lists_state_consumers(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    before = (project / STATE).read_bytes()

    result = run(project, "delete", "-f", "data-1.dstack.yml", "-y")

    assert result.exit_code == 1
    assert "volume.data-1 cannot be deleted while runs use it" in result.stderr
    assert "run.train.node[1].mount[/data] (in the state)" in result.stderr
    assert (project / STATE).read_bytes() == before


def test_removing_volume_and_run_orders_detach_stop_delete(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    volume_id = read_state(project)["volume.data-0"]["id"]
    (project / "data-0.dstack.yml").unlink()
    (project / "train.dstack.yml").unlink()

    order = [address for _, address in actionable(json_plan(project))]
    applied = run(project, "apply", "-y")

    mount, node, volume = "run.train.node[0].mount[/data]", "run.train.node[0]", "volume.data-0"
    assert order.index(mount) < order.index(node) < order.index(volume)
    assert applied.exit_code == 0, applied.output
    lines = applied.stdout.splitlines()
    finished = [
        next(i for i, line in enumerate(lines) if line.startswith(f"{mount}: Detach complete")),
        next(i for i, line in enumerate(lines) if line.startswith(f"{node}: Stop complete")),
        lines.index(f"{volume}: Destroying..."),
    ]
    assert finished == sorted(finished)
    assert not (local_root / volume_id).exists()
    assert set(read_state(project)) == {"volume.data-1"}


# Attachments changed outside volplan


def test_existing_attachment_is_adopted(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    state_file = json.loads((project / STATE).read_text())
    state_file["resources"] = [r for r in state_file["resources"] if r["address"] != "run.train.node[0].mount[/data]"]
    (project / STATE).write_text(json.dumps(state_file, indent=2, sort_keys=True) + "\n")

    changes = actionable(json_plan(project))
    applied = run(project, "apply", "-y")

    assert changes == [("register", "run.train.node[0].mount[/data]")]
    assert "adopted" in applied.stdout
    assert "Attaching..." not in applied.stdout
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0


def test_vanished_attachment_is_planned_again(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    state = read_state(project)
    mount = state["run.train.node[0].mount[/data]"]
    LocalProvider(local_root).detach_volume(
        MountSpec(mount["node_id"], "/data", "aws", volume_id=mount["volume_id"]), force=False
    )

    planned = run(project, "plan")
    changes = actionable(json_plan(project))
    applied = run(project, "apply", "-y")

    assert changes == [("create", "run.train.node[0].mount[/data]")]
    assert "data-0 was detached outside volplan; it will be attached again" in planned.stdout
    assert applied.exit_code == 0, applied.output
    assert (node_root(local_root, state, "run.train.node[0]") / "data").is_symlink()
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0


def test_vanished_attachment_of_removed_run_is_dropped(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    mount = read_state(project)["run.train.node[0].mount[/data]"]
    LocalProvider(local_root).detach_volume(
        MountSpec(mount["node_id"], "/data", "aws", volume_id=mount["volume_id"]), force=False
    )
    (project / "train.dstack.yml").unlink()

    changes = actionable(json_plan(project))

    assert ("deregister", "run.train.node[0].mount[/data]") in changes
    assert ("delete", "run.train.node[1].mount[/data]") in changes
    assert run(project, "apply", "-y").exit_code == 0
    assert not any(address.startswith("run.") for address in read_state(project))


# Stopping


def test_stop_keeps_run_stopped_until_start(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")

    stopped = run(project, "stop", "train", "-y")

    assert stopped.exit_code == 0, stopped.output
    state = read_state(project)
    assert state["run.train"]["stopped"] is True
    assert "run.train.node[0]" not in state
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0

    started = run(project, "start", "train", "-y")
    assert started.exit_code == 0, started.output
    assert read_state(project)["run.train"]["stopped"] is False
    assert "run.train.node[1].mount[/data]" in read_state(project)


def test_stopped_run_starts_when_its_file_changes(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    run(project, "stop", "train", "-y")
    write(project, "train.dstack.yml", TWO_NODE_TASK + "env: [EPOCHS=4]\n")

    changes = json_plan(project)

    run_change = next(c for c in changes if c["address"] == "run.train")
    assert run_change["action"] == "update"
    assert "its file changed since volplan stop" in run_change["reason"]
    assert ("create", "run.train.node[0]") in actionable(changes)


def test_stop_unknown_run_fails(project: Path, local_root: Path) -> None:
    two_node_project(project)

    result = run(project, "stop", "nope", "-y")

    assert result.exit_code == 1
    assert "run.nope: there is no such run" in result.stderr


def test_stuck_detach_forced_after_stop_duration(project: Path, local_root: Path) -> None:
    two_node_project(project, stop_duration="2s")
    run(project, "apply", "-y")
    state = read_state(project)
    LocalProvider(local_root).hold_detach(state["volume.data-0"]["id"])

    started = time.monotonic()
    stopped = run(project, "stop", "train", "-y")
    elapsed = time.monotonic() - started

    assert stopped.exit_code == 0, stopped.output
    assert "run.train.node[0].mount[/data]: detaching" in stopped.stdout
    assert "(stop_duration 2s)" in stopped.stdout
    assert "did not finish within stop_duration 2s" in stopped.stderr
    assert "A forced detach can corrupt the file system" in stopped.stderr
    assert elapsed >= 2
    assert LocalProvider(local_root).read_volume(state["volume.data-0"]["id"]).attachments == ()


def test_abort_forces_detach_at_once(project: Path, local_root: Path) -> None:
    two_node_project(project, stop_duration="1h")
    run(project, "apply", "-y")
    LocalProvider(local_root).hold_detach(read_state(project)["volume.data-0"]["id"])

    stopped = run(project, "stop", "train", "--abort", "-y")

    assert stopped.exit_code == 0, stopped.output
    assert "--abort" in stopped.stderr
    assert "A forced detach can corrupt the file system" in stopped.stderr


def test_detach_off_waits_until_released(project: Path, local_root: Path) -> None:
    # A separate process, so that this test can release the detach while the stop waits.
    two_node_project(project, stop_duration="off")
    run(project, "apply", "-y")
    state = read_state(project)
    volume_id = state["volume.data-0"]["id"]
    LocalProvider(local_root).hold_detach(volume_id)

    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "stop", "train", "-y", "--parallelism", "1"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        # With one worker, node 1 stops while node 0's detach waits: the wait holds no worker.
        if line.startswith("run.train.node[1]: Stop complete"):
            break
    time.sleep(1)
    assert process.poll() is None, "".join(seen)
    LocalProvider(local_root).release_detach(volume_id)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, out + err
    assert "forced" not in err.lower()
    assert "run.train.node[0].mount[/data]: Detach complete" in out
    assert read_state(project)["run.train"]["stopped"] is True


def test_stop_first_where_stopping_releases_volumes(project: Path, local_root: Path) -> None:
    # The planner alone, with a backend whose node stop releases its volumes (as terminating
    # an EC2 instance does): stop, then detach, then delete.
    two_node_project(project)
    run(project, "apply", "-y")
    (project / "data-0.dstack.yml").unlink()
    (project / "train.dstack.yml").unlink()
    store = LocalStateStore(project / STATE)

    def releasing(backend: str) -> Capabilities:
        return dataclasses.replace(local_capabilities(backend), stop_releases_volumes=True)

    plan = make_plan(
        PlanInput(
            load_project(project), store.read(), facts={}, provider_kind=lambda b: "local", capabilities=releasing
        )
    )

    order = [change.address for change in plan.actionable]
    mount, node, volume = "run.train.node[0].mount[/data]", "run.train.node[0]", "volume.data-0"
    assert order.index(node) < order.index(mount) < order.index(volume)
    assert (node, mount) in plan.edges
    assert (mount, volume) in plan.edges


def test_destroy_removes_runs_first(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    state = read_state(project)

    destroyed = run(project, "destroy", "-y")

    assert destroyed.exit_code == 0, destroyed.output
    assert read_state(project) == {}
    assert not any((local_root / "nodes").glob("i-*"))
    assert not (local_root / state["volume.data-0"]["id"]).exists()


def test_stop_duration_change_is_state_only(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    write(project, "train.dstack.yml", TWO_NODE_TASK + "stop_duration: off\n")

    changes = actionable(json_plan(project))
    applied = run(project, "apply", "-y")

    assert ("update", "run.train.node[0].mount[/data]") in changes
    assert not any(address.endswith("node[0]") for _, address in changes)
    assert applied.exit_code == 0, applied.output
    assert read_state(project)["run.train.node[0].mount[/data]"]["stop_duration"] is None


def test_interrupted_start_is_adopted(project: Path, local_root: Path) -> None:
    two_node_project(project)
    run(project, "apply", "-y")
    state = json.loads((project / STATE).read_text())
    lost = next(r for r in state["resources"] if r["address"] == "run.train.node[1]")
    state["resources"] = [r for r in state["resources"] if not r["address"].startswith("run.train.node[1]")]
    (project / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    # The journal of an apply that died after the provider started the node: the intent's
    # token is the one the node was started with.
    token = json.loads((local_root / "nodes" / lost["id"] / "node.json").read_text())["token"]
    intent = {"op": "intent", "seq": 1, "address": lost["address"], "action": "create", "token": token}
    intent |= {"record": dict(lost, id=None), "time": "2026-01-01T00:00:00Z"}
    begin = {"op": "begin", "lineage": state["lineage"], "time": "2026-01-01T00:00:00Z"}
    (project / f"{STATE}.journal").write_text(json.dumps(begin) + "\n" + json.dumps(intent) + "\n")

    applied = run(project, "apply", "-y")

    assert applied.exit_code == 0, applied.output
    after = read_state(project)
    assert after["run.train.node[1]"]["id"] == lost["id"]
    assert after["run.train.node[1].mount[/data]"]["node_id"] == lost["id"]
    assert len(list((local_root / "nodes").glob("i-*"))) == 2


def test_vanished_node_releases_its_volume(project: Path, local_root: Path) -> None:
    two_node_project(project)
    assert run(project, "apply", "-y").exit_code == 0
    state = read_state(project)
    gone = state["run.train.node[0]"]["id"]
    volume_id = state["volume.data-0"]["id"]
    (LocalProvider(local_root).volume_data_path(volume_id) / "kept.txt").write_text("kept")
    shutil.rmtree(local_root / "nodes" / gone)

    drift = run(project, "drift")
    metadata = json.loads((local_root / volume_id / "volume.json").read_text())
    applied = run(project, "apply", "-y")
    planned = run(project, "plan", "--detailed-exitcode")

    assert drift.exit_code == 2, drift.output
    assert metadata["attachments"] == []
    assert "last_detached_at" in metadata
    assert applied.exit_code == 0, applied.output
    assert planned.exit_code == 0, planned.output
    node = read_state(project)["run.train.node[0]"]["id"]
    assert node != gone
    assert json.loads((local_root / volume_id / "volume.json").read_text())["attachments"] == [node]
    assert (node_root(local_root, read_state(project), "run.train.node[0]") / "data" / "kept.txt").read_text() == "kept"


def test_stop_and_start_after_node_vanished(project: Path, local_root: Path) -> None:
    two_node_project(project)
    assert run(project, "apply", "-y").exit_code == 0
    state = read_state(project)
    gone = state["run.train.node[1]"]["id"]
    shutil.rmtree(local_root / "nodes" / gone)

    assert run(project, "stop", "train", "-y").exit_code == 0
    assert run(project, "start", "train", "-y").exit_code == 0

    assert run(project, "plan", "--detailed-exitcode").exit_code == 0
    volume_id = state["volume.data-1"]["id"]
    node = read_state(project)["run.train.node[1]"]["id"]
    assert json.loads((local_root / volume_id / "volume.json").read_text())["attachments"] == [node]
