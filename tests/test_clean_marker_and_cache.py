"""The nodes folder's clean marker after changes cut short, the node metadata cache after
rewrites, and a saved plan with a dependency cycle, which must write nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pytest import MonkeyPatch

from providers.base import MountSpec
from providers.local import LocalProvider
from tests.conftest import run, volume_file
from tests.test_local_nodes import make_node, make_volume

REPOSITORY = Path(__file__).resolve().parent.parent

# Starts a node with the local provider and stops for good once its temporary folder is
# complete, so that the test can kill the process there.
_START_PAUSED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import providers.local_nodes as local_nodes
    from providers.base import NodeSpec
    from providers.local import LocalProvider

    real_fsync = local_nodes.fsync_directory

    def paused(folder):
        real_fsync(folder)
        if Path(folder).name.startswith(".tmp-"):
            print("staged", flush=True)
            time.sleep(60)

    local_nodes.fsync_directory = paused
    provider = LocalProvider(Path(sys.argv[1]))
    provider.start_node(NodeSpec("run.k.node[0]", "run.k", 0, "aws", "eu-west-1", None, "test"), "killed")
    """
)


def kill_start_when_staged(root: Path) -> None:
    """Run a node start in a real process and SIGKILL it after its temporary folder is written."""
    process = subprocess.Popen(
        [sys.executable, "-c", _START_PAUSED, str(root)], cwd=REPOSITORY, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "staged"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()


def test_killed_start_found_after_later_change(provider: LocalProvider) -> None:
    make_node(provider, 0)
    assert provider.remove_leftovers() == []
    kill_start_when_staged(provider.root)

    # A change by another command that finishes: it must not hide what the killed one left.
    make_node(provider, 1)

    found = provider.find_leftovers()
    assert any("1 temporary folder(s) of interrupted node starts" in line for line in found)
    assert any("1 token marker(s)" in line for line in found)
    provider.remove_leftovers()
    assert not list((provider.root / "nodes").glob(".tmp-*"))


def test_failed_change_found_after_later_change(provider: LocalProvider, monkeypatch: MonkeyPatch) -> None:
    volume_id = make_volume(provider, "data")
    other_id = make_volume(provider, "other")
    node_id = make_node(provider, 0)
    provider.remove_leftovers()

    def fail_with_full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("providers.local_nodes.os.symlink", fail_with_full_disk)
        with pytest.raises(OSError):
            provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))
    # The next attach of the same apply succeeds.
    provider.attach_volume(MountSpec(node_id, "/other", "aws", other_id))

    assert any("1 mount record(s) without their link" in line for line in provider.find_leftovers())


def test_stop_whose_files_remain_is_swept(provider: LocalProvider) -> None:
    node_id = make_node(provider, 0)
    provider.remove_leftovers()
    stuck = provider.nodes.host_path(node_id, "/stuck")
    stuck.mkdir(parents=True)
    (stuck / "file").write_text("x")
    # An immutable file makes removing the stopped node's files fail, even for root.
    immutable = subprocess.run(["chattr", "+i", str(stuck / "file")], capture_output=True)
    if immutable.returncode != 0:
        os.chmod(stuck, 0o500)
    try:
        provider.stop_node(node_id)
        found = provider.find_leftovers()
    finally:
        for folder in (provider.root / "nodes").glob(".trash-*"):
            subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
            for path in folder.rglob("*"):
                if path.is_dir():
                    os.chmod(path, 0o700)

    assert any("1 folder(s) of interrupted node stops" in line for line in found)


class _SecondStat:
    """A stat result whose times have whole seconds, as ext3, HFS+ or ext4 with 128-byte inodes give."""

    def __init__(self, found: os.stat_result) -> None:
        self._found = found
        self.st_mtime_ns = found.st_mtime_ns // 10**9 * 10**9
        self.st_ctime_ns = found.st_ctime_ns // 10**9 * 10**9

    def __getattr__(self, name: str) -> Any:
        return getattr(self._found, name)


@contextmanager
def second_timestamps(monkeypatch: MonkeyPatch) -> Iterator[None]:
    """Report file times in whole seconds.

    This kernel stamps files to the nanosecond, so a file system with coarser times cannot be
    made here: stat and fstat are wrapped instead, only while the body runs.
    """
    real: dict[str, Callable[..., os.stat_result]] = {"stat": os.stat, "fstat": os.fstat}
    with monkeypatch.context() as patch:
        patch.setattr(os, "stat", lambda *args, **kwargs: _SecondStat(real["stat"](*args, **kwargs)))
        patch.setattr(os, "fstat", lambda *args, **kwargs: _SecondStat(real["fstat"](*args, **kwargs)))
        yield


def test_node_cache_sees_swapped_mount(provider: LocalProvider, monkeypatch: MonkeyPatch) -> None:
    volumes = [make_volume(provider, "data"), make_volume(provider, "logs")]
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/a", "aws", volumes[0]))

    # Each swap rewrites node.json twice with records of the same size, and ext4 often gives
    # the second file the first one's freed inode: within one second, its key is the same.
    with second_timestamps(monkeypatch):
        for swap in range(1, 21):
            old, new = volumes[(swap - 1) % 2], volumes[swap % 2]
            assert provider.refresh_nodes([node_id])[node_id].mounts["/a"].volume_id == old
            provider.detach_volume(MountSpec(node_id, "/a", "aws", old), force=False)
            provider.attach_volume(MountSpec(node_id, "/a", "aws", new))

            mounts = provider.refresh_nodes([node_id])[node_id].mounts
            assert "/a" in mounts, f"swap {swap}: the mount of {new} is missing"
            assert mounts["/a"].volume_id == new


def test_saved_plan_cycle_writes_nothing(project: Path, tmp_path: Path) -> None:
    volume_file(project, "alpha")
    volume_file(project, "beta")
    saved = tmp_path / "cycle.plan"
    assert run(project, "plan", "--out", str(saved)).exit_code == 0
    # A plan file edited by hand: two creates that each wait for the other.
    data = json.loads(saved.read_text())
    data["edges"] = [["volume.alpha", "volume.beta"], ["volume.beta", "volume.alpha"]]
    saved.write_text(json.dumps(data))

    result = run(project, "apply", str(saved))

    assert result.exit_code == 1
    assert "Dependency cycle" in result.stderr
    assert not (project / "volplan.state.json").exists()
    assert not (project / "volplan.state.json.journal").exists()
