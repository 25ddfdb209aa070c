"""The local provider's simulated instance hosts: nodes, links, single attachment, held detaches."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine.errors import ProviderError
from providers.base import MountSpec, NodeSpec, VolumeSpec
from providers.local import LocalProvider
from providers.local_nodes import HOLD_DETACH_MARKER


def make_volume(provider: LocalProvider, name: str, backend: str = "aws", region: str = "eu-west-1") -> str:
    spec = VolumeSpec(f"volume.{name}", name, backend, region, None, 10, {}, "test")
    return provider.create_volume(spec, token=f"token-{name}").id


def make_node(provider: LocalProvider, rank: int, backend: str = "aws", region: str = "eu-west-1") -> str:
    spec = NodeSpec(f"run.t.node[{rank}]", "run.t", rank, backend, region, None, "test")
    return provider.start_node(spec, token=f"node-{rank}-{backend}").id


def test_start_is_idempotent_by_token(provider: LocalProvider) -> None:
    spec = NodeSpec("run.t.node[0]", "run.t", 0, "aws", "eu-west-1", None, "test")

    first = provider.start_node(spec, token="same")
    second = provider.start_node(spec, token="same")

    assert first.id == second.id
    assert first.id.startswith("i-")
    assert provider.find_nodes_by_token(["same"])["same"].id == first.id


def test_write_through_mount_lands_in_volume(provider: LocalProvider, local_root: Path) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/workspace/data", "aws", volume_id=volume_id))

    (provider.nodes.root_path(node_id, "/workspace/data") / "file.txt").write_text("kept")

    assert (provider.volume_data_path(volume_id) / "file.txt").read_text() == "kept"
    recorded = json.loads((local_root / "nodes" / node_id / "node.json").read_text())["mounts"]["/workspace/data"]
    assert recorded["volume_id"] == volume_id
    assert recorded["target"] == str(provider.volume_data_path(volume_id))


def test_single_attach_names_holder(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    first, second = make_node(provider, 0), make_node(provider, 1)
    provider.attach_volume(MountSpec(first, "/data", "aws", volume_id=volume_id))
    provider.attach_volume(MountSpec(first, "/data", "aws", volume_id=volume_id))

    with pytest.raises(ProviderError) as caught:
        provider.attach_volume(MountSpec(second, "/data", "aws", volume_id=volume_id))

    assert caught.value.title == "Volume in use"
    assert first in caught.value.detail
    assert provider.read_volume(volume_id).attachments == (first,)


def test_multi_attach_on_runpod(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "shared", backend="runpod", region="EU-RO-1")
    first = make_node(provider, 0, backend="runpod", region="EU-RO-1")
    second = make_node(provider, 1, backend="runpod", region="EU-RO-1")

    provider.attach_volume(MountSpec(first, "/data", "runpod", volume_id=volume_id))
    provider.attach_volume(MountSpec(second, "/data", "runpod", volume_id=volume_id))

    assert set(provider.read_volume(volume_id).attachments) == {first, second}


def test_attach_in_other_region_fails(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data", region="us-east-1")
    node_id = make_node(provider, 0)

    with pytest.raises(ProviderError) as caught:
        provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id=volume_id))

    assert caught.value.title == "Volume in another region"


def test_held_detach_waits_until_released_or_forced(provider: LocalProvider, local_root: Path) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    mount = MountSpec(node_id, "/data", "aws", volume_id=volume_id)
    provider.attach_volume(mount)
    provider.hold_detach(volume_id)

    assert (local_root / volume_id / HOLD_DETACH_MARKER).exists()
    assert provider.detach_volume(mount, force=False) is False
    assert provider.read_volume(volume_id).attachments == (node_id,)

    (local_root / volume_id / HOLD_DETACH_MARKER).unlink()
    assert provider.detach_volume(mount, force=False) is True
    assert provider.read_volume(volume_id).attachments == ()
    assert provider.detach_volume(mount, force=False) is True


def test_forced_detach_ignores_hold(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    mount = MountSpec(node_id, "/data", "aws", volume_id=volume_id)
    provider.attach_volume(mount)
    provider.hold_detach(volume_id)

    assert provider.detach_volume(mount, force=True) is True
    assert not provider.nodes.root_path(node_id, "/data").exists()


def test_stop_with_attached_volume_fails(provider: LocalProvider) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id=volume_id))

    with pytest.raises(ProviderError) as caught:
        provider.stop_node(node_id)

    assert caught.value.title == "Node has attached volumes"
    assert provider.refresh_nodes([node_id])[node_id].mounts["/data"].volume_id == volume_id


def test_stop_keeps_volume_data(provider: LocalProvider, local_root: Path) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    mount = MountSpec(node_id, "/data", "aws", volume_id=volume_id)
    provider.attach_volume(mount)
    (provider.nodes.root_path(node_id, "/data") / "f").write_text("x")

    provider.detach_volume(mount, force=False)
    provider.stop_node(node_id)
    provider.stop_node(node_id)

    assert not (local_root / "nodes" / node_id).exists()
    assert (provider.volume_data_path(volume_id) / "f").read_text() == "x"
    assert provider.refresh_nodes([node_id]) == {}


def test_foreign_link_is_not_followed(provider: LocalProvider, tmp_path: Path) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    os.symlink(outside, provider.nodes.root_path(node_id, "/data"))

    with pytest.raises(ProviderError) as caught:
        provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id=volume_id))

    assert caught.value.title == "Mount path in use"
    assert provider.read_volume(volume_id).attachments == ()
    provider.stop_node(node_id)
    assert (outside / "precious").read_text() == "keep"


def test_replaced_link_is_reported_missing(provider: LocalProvider, tmp_path: Path) -> None:
    volume_id = make_volume(provider, "data")
    node_id = make_node(provider, 0)
    mount = MountSpec(node_id, "/data", "aws", volume_id=volume_id)
    provider.attach_volume(mount)
    link = provider.nodes.root_path(node_id, "/data")
    link.unlink()
    os.symlink(tmp_path, link)

    assert "/data" not in provider.refresh_nodes([node_id])[node_id].mounts

    provider.detach_volume(mount, force=False)
    assert link.is_symlink()
    assert os.readlink(link) == str(tmp_path)


def test_instance_path_stays_inside_host_folder(provider: LocalProvider, local_root: Path) -> None:
    node_id = make_node(provider, 0)

    provider.attach_volume(MountSpec(node_id, "/cache", "aws", instance_path="/mnt/cache"))

    target = Path(os.readlink(provider.nodes.root_path(node_id, "/cache")))
    assert target == local_root / "nodes" / node_id / "host" / "mnt" / "cache"
    assert target.is_dir()


def test_attach_releases_vanished_holder(provider: LocalProvider, local_root: Path) -> None:
    volume_id = make_volume(provider, "data")
    gone = make_node(provider, 0)
    provider.attach_volume(MountSpec(gone, "/data", "aws", volume_id=volume_id))
    shutil.rmtree(local_root / "nodes" / gone)
    node_id = make_node(provider, 1)

    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id=volume_id))

    metadata = json.loads((local_root / volume_id / "volume.json").read_text())
    assert metadata["attachments"] == [node_id]
    assert "last_detached_at" in metadata


def test_read_releases_vanished_holder(provider: LocalProvider, local_root: Path) -> None:
    volume_id = make_volume(provider, "data")
    gone = make_node(provider, 0)
    provider.attach_volume(MountSpec(gone, "/data", "aws", volume_id=volume_id))
    assert provider.read_volume(volume_id).attachments == (gone,)
    shutil.rmtree(local_root / "nodes" / gone)

    facts = provider.read_volume(volume_id)

    assert facts.attachments == ()
    assert facts.status == "available"
    assert facts.idle_since is not None
    assert json.loads((local_root / volume_id / "volume.json").read_text())["attachments"] == []


def test_refresh_and_delete_release_vanished_holder(provider: LocalProvider, local_root: Path) -> None:
    kept = make_volume(provider, "kept")
    deleted = make_volume(provider, "deleted")
    gone = make_node(provider, 0)
    provider.attach_volume(MountSpec(gone, "/kept", "aws", volume_id=kept))
    provider.attach_volume(MountSpec(gone, "/deleted", "aws", volume_id=deleted))
    shutil.rmtree(local_root / "nodes" / gone)

    refreshed = provider.refresh_volumes([kept])
    provider.delete_volume(deleted)

    assert refreshed[kept].attachments == ()
    assert not (local_root / deleted).exists()


def test_live_holder_is_kept(provider: LocalProvider, local_root: Path) -> None:
    volume_id = make_volume(provider, "data")
    holder = make_node(provider, 0)
    provider.attach_volume(MountSpec(holder, "/data", "aws", volume_id=volume_id))

    assert provider.read_volume(volume_id).attachments == (holder,)
    with pytest.raises(ProviderError, match="Volume in use"):
        provider.attach_volume(MountSpec(make_node(provider, 1), "/data", "aws", volume_id=volume_id))
