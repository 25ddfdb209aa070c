"""What killed starts, stops, attaches and detaches leave on the local provider, and how the
next apply recovers: half-done mounts, stale volume claims, and temporary node folders."""

from __future__ import annotations

import json
import random
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from pytest import MonkeyPatch

from providers.base import MountSpec
from providers.local import METADATA, LocalProvider
from tests.conftest import run_process, write
from tests.crash_harness import RunWorkload, read_world, start, wait_for
from tests.test_local_nodes import make_node, make_volume


def attachments(provider: LocalProvider, volume_id: str) -> list[str]:
    data: list[str] = json.loads((provider.root / volume_id / METADATA).read_text())["attachments"]
    return data


def test_stop_after_detach_killed_frees_volume(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))
    # What a detach killed right after removing the link leaves: the record and the claim.
    provider.nodes.root_path(node_id, "/data").unlink()

    assert provider.read_volume(volume_id).attachments == ()
    provider.stop_node(node_id)

    assert attachments(provider, volume_id) == []
    provider.delete_volume(volume_id)
    assert not (provider.root / volume_id).exists()


def test_detach_of_old_path_keeps_claim_of_new_path(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/workspace/data", "aws", volume_id))
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))

    assert provider.detach_volume(MountSpec(node_id, "/workspace/data", "aws", volume_id), force=False)

    assert attachments(provider, volume_id) == [node_id]
    assert provider.read_volume(volume_id).attachments == (node_id,)


def test_apply_sweeps_what_killed_node_calls_left(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    other_id = make_volume(provider, "other")
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))
    provider.attach_volume(MountSpec(node_id, "/other", "aws", other_id))
    nodes = provider.root / "nodes"
    # A start killed before its rename, a stop killed before removing its files, a claim
    # that an attach killed before writing it never made, and a detach killed after the link.
    (nodes / ".tmp-0123").mkdir()
    (nodes / ".trash-4567").mkdir()
    (nodes / ".tokens" / "feed").write_text("i-00000000000000000\n")
    metadata = json.loads((provider.root / volume_id / METADATA).read_text())
    (provider.root / volume_id / METADATA).write_text(json.dumps(dict(metadata, attachments=[])))
    provider.nodes.root_path(node_id, "/other").unlink()
    # Killed calls never restore the marker that records that no change was cut short.
    (nodes / ".clean").unlink()
    before = sorted(str(path) for path in nodes.rglob("*"))

    found = provider.find_leftovers()

    assert sorted(str(path) for path in nodes.rglob("*")) == before
    assert any("1 temporary folder(s) of interrupted node starts" in line for line in found)
    assert any("1 folder(s) of interrupted node stops" in line for line in found)
    assert any("1 token marker(s) of nodes that no longer exist" in line for line in found)
    assert any("1 mount record(s) without their link" in line for line in found)
    assert any("2 volume attachment(s)" in line for line in found)

    removed = provider.remove_leftovers()

    assert any(line.startswith("removed 1 temporary folder(s) of interrupted node starts") for line in removed)
    assert not (nodes / ".tmp-0123").exists()
    assert not (nodes / ".trash-4567").exists()
    assert not (nodes / ".tokens" / "feed").exists()
    assert attachments(provider, volume_id) == [node_id]
    assert attachments(provider, other_id) == []
    assert list(json.loads((nodes / node_id / "node.json").read_text())["mounts"]) == ["/data"]
    assert provider.find_leftovers() == []


def test_clean_marker_skips_node_reads(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))
    # Damage no volplan call makes: with the clean marker present, the sweep does not look.
    (provider.root / "nodes" / node_id / "node.json").write_text("not JSON")

    assert provider.find_leftovers() == []
    assert provider.remove_leftovers() == []


def test_failed_change_keeps_sweep_on(provider: LocalProvider, monkeypatch: MonkeyPatch) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)

    # A full disk cannot be set up here: the link call fails as it would on one.
    def fail_link(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("providers.local_nodes.os.symlink", fail_link)
    with pytest.raises(OSError):
        provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))
    monkeypatch.undo()

    assert not (provider.root / "nodes" / ".clean").exists()
    assert any("1 mount record(s) without their link" in line for line in provider.find_leftovers())
    provider.remove_leftovers()
    assert (provider.root / "nodes" / ".clean").exists()
    assert provider.find_leftovers() == []


def test_claim_of_another_tool_still_holds(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    metadata = json.loads((provider.root / volume_id / METADATA).read_text())
    (provider.root / volume_id / METADATA).write_text(json.dumps(dict(metadata, attachments=["host-of-other-tool"])))
    make_node(provider, 0)

    provider.remove_leftovers()

    assert provider.read_volume(volume_id).attachments == ("host-of-other-tool",)


def test_kill_after_attach_adopts_mount_then_moves_it(project: Path, local_root: Path, tmp_path: Path) -> None:
    workload = RunWorkload(count=1, left_out=0.0, changed=0.0)
    workload.paths["r00"] = "/workspace/data"
    workload.write_round(project, random.Random(0), final=True)
    log = tmp_path / "apply.log"
    process = start(
        [sys.executable, "-m", "tests.paused_volplan", "-C", str(project), "apply", "-y"],
        local_root,
        log,
        {"VOLPLAN_TEST_PAUSE": "attach.made=60"},
    )
    assert wait_for(log, re.compile(rb"mount\[/workspace/data\]: Attaching"), process, timeout=30)
    deadline = time.monotonic() + 30
    while not any(link.is_symlink() for link in (local_root / "nodes").glob("i-*/root/workspace/data")):
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    killed = read_world(project, local_root).folded
    assert killed is not None
    assert not any(address.endswith("mount[/workspace/data]") for address in killed.resources)

    planned = run_process(project, "plan", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})
    assert "adopted the mount on node" in planned.stdout

    # The next configuration moves the mount: the adopted one must be detached, not forgotten.
    workload.paths["r00"] = "/data"
    write(project, "r00.dstack.yml", (project / "r00.dstack.yml").read_text().replace("/workspace/data", "/data"))
    applied = run_process(project, "apply", "-y", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert applied.returncode == 0, applied.stdout + applied.stderr
    world = read_world(project, local_root)
    assert workload.check(world, converged=True) == []
    assert (
        run_process(project, "plan", "--detailed-exitcode", env={"VOLPLAN_LOCAL_ROOT": str(local_root)}).returncode == 0
    )
