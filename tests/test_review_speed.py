"""Regression tests for the no-op plan speed work: the nodes folder's clean marker, the node
metadata cache, and the loading and planning fast paths, each against what volplan did before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from providers.base import MountSpec
from providers.local import LocalProvider
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


def test_failed_change_found_after_later_change(provider: LocalProvider, monkeypatch: object) -> None:
    from pytest import MonkeyPatch

    assert isinstance(monkeypatch, MonkeyPatch)
    volume_id = make_volume(provider, "data")
    other_id = make_volume(provider, "other")
    node_id = make_node(provider, 0)
    provider.remove_leftovers()

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("providers.local_nodes.os.symlink", refuse)
        try:
            provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id))
        except OSError:
            pass
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
