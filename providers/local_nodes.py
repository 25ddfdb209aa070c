"""Simulated instance hosts for the local provider: run nodes and their mounts as folders.

Layout under the local provider's root:

    nodes/i-0123456789abcdef0/   one folder per node, named by its id ("i-" and 17 hex digits)
        node.json                id, backend, region, token, and every link this provider made
        host/                    the simulated host's file system: instance_path /mnt/cache is
                                 host/mnt/cache, never the real /mnt/cache
        root/                    the node's root tree: mount path /data is the link root/data
    nodes/.tmp-<uuid>/           a node being started; renamed into place when complete
    nodes/.trash-<uuid>/         a stopped node whose files are being removed
    nodes/.tokens/<token>        the id of the node that a start with this idempotency token made
    nodes/.clean                 present while no change under this folder was cut short

A killed start can leave a `.tmp-` folder and a token marker whose node never appeared. A
killed stop can leave a `.trash-` folder and the stopped node's marker. `sweep_leftovers`
finds them, and removes them when apply starts. Every change takes the nodes lock, removes
`.clean` before its first write and puts it back after its last, unless the marker was already
missing or the change left files it could not remove. Only a sweep that removed every leftover
creates a missing marker again. So when a sweep finds the marker under the lock, nothing was
left half done, and the sweep reads no node at all.

A network mount is a symbolic link from the node's root tree to the volume's `data/` folder,
so a file written through the mount lands in the volume. An instance mount links to the
folder inside `host/`. node.json records each link with its target; the provider removes
or reports only links whose target still matches that record, and follows no other link.

Attachments are also recorded in each volume's volume.json (`attachments`: node ids), which
is what enforces single attachment. A node whose folder was removed outside volplan releases
its volumes, as a terminated cloud instance does: `release_vanished` drops it from a volume's
attachments when the provider next reads or attaches that volume. Changes to both files happen under one lock (a thread
lock and an flock on `nodes/.lock`), so concurrent applies in several processes stay
consistent.

A test can hold a volume's detach stuck: `LocalProvider.hold_detach(volume_id)` creates the
marker file `vol-…/hold-detach`, and while it exists a detach that is not forced reports
"in progress". `release_detach(volume_id)` (or deleting the file) lets the next poll finish.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.errors import ProviderError
from providers.base import Capabilities, MountFacts, MountSpec, NodeFacts, NodeSpec
from state.store import FILE_MODE, fsync_directory

log = logging.getLogger(__name__)

NODE_ID = re.compile(r"^i-[0-9a-f]{17}$")
NODE_METADATA = "node.json"
HOLD_DETACH_MARKER = "hold-detach"
CLEAN_MARKER = ".clean"

# Reads and writes a volume's metadata by id; supplied by the local provider.
MetadataReader = Callable[[str], "dict[str, Any] | None"]
MetadataWriter = Callable[[str, "dict[str, Any]"], None]


def new_node_id() -> str:
    return "i-" + uuid.uuid4().hex[:17]


class LocalNodes:
    """Node folders and their mounts under `root/nodes`."""

    def __init__(
        self,
        root: Path,
        read_volume: MetadataReader,
        write_volume: MetadataWriter,
        volume_data: Callable[[str], Path],
        capabilities: Callable[[str], Capabilities],
        claimed_volumes: Callable[[], list[str]] = list,
    ) -> None:
        self.root = root
        self.folder = root / "nodes"
        self._folder_text = str(self.folder)
        self._read_volume = read_volume
        self._write_volume = write_volume
        self._volume_data = volume_data
        self._capabilities = capabilities
        self._claimed_volumes = claimed_volumes
        self._thread_lock = threading.Lock()
        # Set by a change that could not remove all its files, so that the sweep looks for them.
        self._left_files = False
        # Node metadata by id, with the identity of the file it was read from; see _peek.
        self._cache: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}

    # Nodes

    def start(self, spec: NodeSpec, token: str) -> NodeFacts:
        with self.locked():
            existing = self._started_with(token)
            if existing is not None:
                log.info("start of %s with token %s already done: %s", spec.address, token, existing["id"])
                return _facts(existing)

            node_id = new_node_id()
            metadata: dict[str, Any] = {
                "id": node_id,
                "address": spec.address,
                "run": spec.run,
                "rank": spec.rank,
                "lineage": spec.lineage,
                "backend": spec.backend,
                "region": spec.region,
                "availability_zone": spec.availability_zone,
                "token": token,
                "created_at": _now(),
                "mounts": {},
            }
            log.debug("starting local node %s for %s", node_id, spec.address)
            self._make_node_folder(node_id, metadata)
            log.debug("started local node %s", node_id)
            return _facts(metadata)

    def stop(self, node_id: str) -> None:
        with self.locked():
            metadata = self._read(node_id)
            if metadata is None:
                log.info("stop of %s: already gone", node_id)
                return
            intact = self._link_intact(node_id, metadata)
            volumes = sorted(
                m["volume_id"] for p, m in metadata["mounts"].items() if m.get("volume_id") and p in intact
            )
            if volumes:
                raise ProviderError(
                    "Node has attached volumes",
                    f"node {node_id} still has {', '.join(volumes)} attached; detach them before stopping it.",
                )
            # A record whose link is gone is what a detach killed half way leaves: its volume
            # is no longer attached, so only the record and the volume's claim remain to drop.
            for path in sorted(metadata["mounts"]):
                recorded = metadata["mounts"][path]
                self._remove_link(node_id, metadata, path)
                self._release_volume(
                    MountSpec(
                        node_id, path, metadata["backend"], recorded.get("volume_id"), recorded.get("instance_path")
                    )
                )

            # As with volumes, the rename makes the node disappear at once. Removing its files can
            # then fail, and no folder that looks like a live node is left behind.
            trash = self.folder / f".trash-{uuid.uuid4().hex}"
            log.debug("stopping local node %s", node_id)
            os.rename(self._node_folder(node_id), trash)
            fsync_directory(self.folder)
            if metadata.get("token"):
                (self.folder / ".tokens" / _token_file(metadata["token"])).unlink(missing_ok=True)
            shutil.rmtree(trash, ignore_errors=True)
            if os.path.lexists(trash):
                log.warning("could not remove all files of stopped node %s from %s", node_id, trash)
                self._left_files = True
            log.debug("stopped local node %s", node_id)

    def refresh(self, node_ids: Iterable[str]) -> dict[str, NodeFacts]:
        found: dict[str, NodeFacts] = {}
        for node_id in set(node_ids):
            if not NODE_ID.match(node_id):
                continue
            metadata = self._peek(node_id)
            if metadata is not None:
                found[node_id] = _facts(metadata, self._link_intact(node_id, metadata))
        log.debug("refreshed %d local nodes, %d found", len(set(node_ids)), len(found))
        return found

    def find_by_token(self, tokens: Iterable[str]) -> dict[str, NodeFacts]:
        wanted = set(tokens)
        return {m["token"]: _facts(m) for m in self._all_metadata() if m.get("token") in wanted}

    # Leftovers of interrupted starts and stops

    def sweep_leftovers(self, *, remove: bool) -> list[str]:
        """Describe (and with `remove`, delete) the folders and token markers that killed
        starts and stops left behind.

        Starts and stops hold the nodes lock from their first write to their last, so under
        that lock whatever is found belongs to a process that died. Without `remove` nothing
        is written, not even the lock file.
        """
        if not (self.folder / ".lock").exists():
            return []
        with self.locked(changes=False):
            if self._is_clean():
                return []
            staging, trash = [], []
            for entry in sorted(os.scandir(self.folder), key=lambda entry: entry.name):
                if entry.is_dir(follow_symlinks=False) and entry.name.startswith(".tmp-"):
                    staging.append(Path(entry.path))
                elif entry.is_dir(follow_symlinks=False) and entry.name.startswith(".trash-"):
                    trash.append(Path(entry.path))
            markers = self._stale_markers()
            records = self._stale_records(remove=remove)
            claims = self._stale_claims(remove=remove)
            if remove:
                for folder in [*staging, *trash]:
                    shutil.rmtree(folder, ignore_errors=True)
                for marker in markers:
                    marker.unlink(missing_ok=True)
                if staging or trash or markers:
                    fsync_directory(self.folder)
                # A folder that could not be removed keeps the marker away, so the next sweep tries again.
                if not any(os.path.lexists(folder) for folder in [*staging, *trash]):
                    self._mark_clean()
                if staging or trash or markers or records or claims:
                    log.info(
                        "removed %d temporary and %d trash folders, %d token markers, %d mount records "
                        "and %d volume claims under %s",
                        len(staging),
                        len(trash),
                        len(markers),
                        records,
                        claims,
                        self.root,
                    )
        counts = _Leftovers(len(staging), len(trash), len(markers), records, claims)
        return counts.describe(self.root, "removed" if remove else "found")

    def _stale_records(self, *, remove: bool) -> int:
        """Count (and with `remove`, drop) the mount records whose link is missing: an attach
        killed before its link, or a detach killed after removing it."""
        count = 0
        for metadata in list(self._all_metadata()):
            node_id = metadata["id"]
            stale = sorted(set(metadata["mounts"]) - self._link_intact(node_id, metadata))
            count += len(stale)
            if remove and stale:
                # A copy of its own: the cached metadata stays as the file is until the write.
                private = self._read(node_id)
                assert private is not None
                for path in stale:
                    self._remove_link(node_id, private, path)
                self._write(node_id, private)
        return count

    def _stale_claims(self, *, remove: bool) -> int:
        """Count (and with `remove`, correct) the claims of local nodes that no intact link
        backs, and the intact links that their volume does not list: what an attach or detach
        killed between its writes leaves in volume.json."""
        backed: dict[str, set[str]] = {}
        for metadata in self._all_metadata():
            intact = self._link_intact(metadata["id"], metadata)
            for path, recorded in metadata["mounts"].items():
                if recorded.get("volume_id") and path in intact:
                    backed.setdefault(recorded["volume_id"], set()).add(metadata["id"])

        count = 0
        for volume_id in sorted(set(self._claimed_volumes()) | set(backed)):
            volume = self._read_volume(volume_id)
            if volume is None:
                continue
            claims = sorted(volume.get("attachments") or [])
            foreign = {node_id for node_id in claims if not NODE_ID.match(node_id)}
            wanted = sorted(backed.get(volume_id, set()) | foreign)
            if claims != wanted:
                count += len(set(claims) ^ set(wanted))
                if remove:
                    volume["attachments"] = wanted
                    self._write_volume(volume_id, volume)
        return count

    def _stale_markers(self) -> list[Path]:
        """Token markers whose node does not exist: its start died before the rename, or its
        stop died before removing the marker."""
        try:
            markers = sorted(os.scandir(self.folder / ".tokens"), key=lambda entry: entry.name)
        except FileNotFoundError:
            return []
        stale = []
        for marker in markers:
            if not marker.is_file(follow_symlinks=False):
                continue
            node_id = Path(marker.path).read_text(encoding="utf-8").strip()
            if not NODE_ID.match(node_id) or not (self.folder / node_id).is_dir():
                stale.append(Path(marker.path))
        return stale

    # Mounts

    def attach(self, mount: MountSpec) -> None:
        with self.locked():
            metadata = self._require(mount.node_id)
            recorded = metadata["mounts"].get(mount.path)
            if recorded is not None and _same_source(recorded, mount):
                if mount.path in self._link_intact(mount.node_id, metadata):
                    log.info("attach of %s at %s on %s: already attached", mount.source, mount.path, mount.node_id)
                    self._add_claim(mount)
                    return
                # The link was removed outside volplan: make it again.
                self._remove_link(mount.node_id, metadata, mount.path)
                recorded = None
            if recorded is not None:
                raise ProviderError(
                    "Mount path in use",
                    f"{mount.path} on node {mount.node_id} already mounts "
                    f"{recorded.get('volume_id') or recorded.get('instance_path')}; detach it first.",
                )

            link = self.root_path(mount.node_id, mount.path)
            if link.exists() or link.is_symlink():
                raise ProviderError(
                    "Mount path in use",
                    f"{link} already exists in node {mount.node_id}'s root tree; the local provider made no mount there.",
                )
            # The record, the link, then the volume's claim: whatever a kill leaves, a claim
            # is backed by a record of this node, so a stop releases it.
            if mount.volume_id is not None:
                self._check_volume(mount, metadata)
                target = self._volume_data(mount.volume_id)
            else:
                assert mount.instance_path is not None
                target = self._host_folder(mount.node_id, mount.instance_path)
                target.mkdir(parents=True, exist_ok=True)
            self._make_link(mount, metadata, target)
            self._add_claim(mount)

    def detach(self, mount: MountSpec, *, force: bool) -> bool:
        with self.locked():
            metadata = self._read(mount.node_id)
            recorded = metadata["mounts"].get(mount.path) if metadata else None
            if metadata is None or recorded is None or not _same_source(recorded, mount):
                self._release_volume(mount)
                log.info("detach of %s from %s: not attached", mount.source, mount.node_id)
                return True
            if mount.volume_id and not force and self.detach_held(mount.volume_id):
                log.info("detach of %s from %s is held by %s", mount.volume_id, mount.node_id, HOLD_DETACH_MARKER)
                return False

            if force:
                log.warning("forcing the detach of %s from node %s", mount.source, mount.node_id)
            # The link, the volume's claim, then the record: the reverse of attach.
            self._remove_link(mount.node_id, metadata, mount.path)
            self._release_volume(mount)
            self._write(mount.node_id, metadata)
            return True

    def has_vanished(self, holders: Iterable[str]) -> bool:
        """Return whether any of the node ids in a volume's attachments no longer exists."""
        return any(self._vanished(holder) for holder in holders)

    def release_vanished(self, volume_id: str) -> dict[str, Any] | None:
        """Release the volume from nodes that no longer exist; return its metadata as it is now."""
        with self.locked():
            volume = self._read_volume(volume_id)
            if volume is not None:
                self._drop_vanished(volume_id, volume)
            return volume

    def detach_held(self, volume_id: str) -> bool:
        return (self.root / volume_id / HOLD_DETACH_MARKER).exists()

    def host_path(self, node_id: str, path: str = "/") -> Path:
        """Return the folder on the simulated host that stands for `path`."""
        return self._host_folder(node_id, path)

    def root_path(self, node_id: str, path: str = "/") -> Path:
        """Return the place in the node's root tree that stands for `path`."""
        return self._node_folder(node_id) / "root" / path.lstrip("/")

    def _check_volume(self, mount: MountSpec, node: dict[str, Any]) -> None:
        """Raise unless the volume exists, is in the node's region and zone, and is free."""
        assert mount.volume_id is not None
        volume = self._read_volume(mount.volume_id)
        if volume is None:
            raise ProviderError(
                "Volume not found",
                f"cannot attach {mount.volume_id} to node {mount.node_id}: it does not exist under {self.root}.",
            )
        if volume.get("region") != node["region"]:
            raise ProviderError(
                "Volume in another region",
                f"{mount.volume_id} is in {volume.get('region')}, node {mount.node_id} in {node['region']}; "
                "a volume attaches only to nodes in its region.",
            )
        if (
            self._capabilities(node["backend"]).attach_per_zone
            and volume.get("availability_zone")
            and node.get("availability_zone")
            and volume["availability_zone"] != node["availability_zone"]
        ):
            raise ProviderError(
                "Volume in another availability zone",
                f"{mount.volume_id} is in {volume['availability_zone']}, node {mount.node_id} in "
                f"{node['availability_zone']}; on {node['backend']} a volume attaches only within its zone.",
            )

        self._drop_vanished(mount.volume_id, volume)
        holders = [
            holder
            for holder in self.live_holders(mount.volume_id, volume.get("attachments") or [])
            if holder != mount.node_id
        ]
        if holders and not self._capabilities(volume["backend"]).multi_attach:
            raise ProviderError(
                "Volume in use",
                f"{mount.volume_id} is attached to {', '.join(holders)}; on {volume['backend']} a volume "
                "attaches to one node at a time. Stop that node's run, or mount another volume.",
            )

    def _add_claim(self, mount: MountSpec) -> None:
        if mount.volume_id is None:
            return
        volume = self._read_volume(mount.volume_id)
        assert volume is not None
        claims = volume.get("attachments") or []
        if mount.node_id not in claims:
            volume["attachments"] = sorted([*claims, mount.node_id])
            self._write_volume(mount.volume_id, volume)

    def live_holders(self, volume_id: str, claims: Iterable[str]) -> list[str]:
        """Return the nodes among `claims` that hold the volume.

        A local node holds it while its root tree has the recorded link to it. A claim
        without that link is what a killed detach leaves, and a local id without a node
        folder is a node that is gone. An id that is not a local node id stands for an
        attachment made by another tool, and holds.
        """
        return self.sort_claims(volume_id, claims)[0]

    def sort_claims(self, volume_id: str, claims: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split `claims` into the nodes that hold the volume (see live_holders) and the local
        nodes that vanished, reading each node once."""
        live, vanished = [], []
        for node_id in claims:
            if not NODE_ID.match(node_id):
                live.append(node_id)
                continue
            metadata = self._peek(node_id)
            if metadata is None:
                vanished.append(node_id)
                continue
            mounts = metadata["mounts"]
            if any(m.get("volume_id") == volume_id and _links_to(m["link"], m["target"]) for m in mounts.values()):
                live.append(node_id)
        return live, vanished

    def _drop_vanished(self, volume_id: str, volume: dict[str, Any]) -> None:
        """Drop attachments to vanished nodes from `volume` and write it; the caller holds the lock."""
        attachments = volume.get("attachments") or []
        vanished = [holder for holder in attachments if self._vanished(holder)]
        if not vanished:
            return
        log.warning("released %s from node %s, which no longer exists", volume_id, ", ".join(vanished))
        volume["attachments"] = [holder for holder in attachments if holder not in vanished]
        self._write_volume(volume_id, volume)

    def _vanished(self, node_id: str) -> bool:
        # Only a well-formed id can name a local node; anything else is left for a person to read.
        return bool(NODE_ID.match(node_id)) and not os.path.exists(os.path.join(self.folder, node_id, NODE_METADATA))

    def _release_volume(self, mount: MountSpec) -> None:
        if mount.volume_id is None:
            return
        volume = self._read_volume(mount.volume_id)
        if volume is None or mount.node_id not in (volume.get("attachments") or []):
            return
        # The node may mount the volume at another path too (a mount moving to a new path
        # is attached there before or after the old path is detached).
        if mount.node_id in self.live_holders(mount.volume_id, [mount.node_id]):
            return
        volume["attachments"] = [holder for holder in volume["attachments"] if holder != mount.node_id]
        self._write_volume(mount.volume_id, volume)

    # Links

    def _make_link(self, mount: MountSpec, metadata: dict[str, Any], target: Path) -> None:
        # The record comes first: a kill before the link leaves a record whose link is
        # missing, which the next attach, detach or stop repairs. A link without a record
        # would block its path for good, as the provider touches no link it did not record.
        link = self.root_path(mount.node_id, mount.path)
        metadata["mounts"][mount.path] = {
            "volume_id": mount.volume_id,
            "instance_path": mount.instance_path,
            "link": str(link),
            "target": str(target),
        }
        self._write(mount.node_id, metadata)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link, target_is_directory=True)
        fsync_directory(link.parent)
        log.debug("linked %s on %s to %s", mount.path, mount.node_id, target)

    def _remove_link(self, node_id: str, metadata: dict[str, Any], path: str) -> None:
        recorded = metadata["mounts"].pop(path)
        link = Path(recorded["link"])
        if link.is_symlink() and os.readlink(link) == recorded["target"]:
            link.unlink()
        elif link.exists() or link.is_symlink():
            log.warning("left %s on %s alone: it is not the link the local provider made", link, node_id)

    def _link_intact(self, node_id: str, metadata: dict[str, Any]) -> set[str]:
        return {
            path for path, recorded in metadata["mounts"].items() if _links_to(recorded["link"], recorded["target"])
        }

    # Folders

    def _node_folder(self, node_id: str) -> Path:
        _check_node_id(node_id)
        return self.folder / node_id

    def _host_folder(self, node_id: str, path: str) -> Path:
        return self._node_folder(node_id) / "host" / path.lstrip("/")

    def _started_with(self, token: str) -> dict[str, Any] | None:
        """Return the node that a start with `token` made, looked up by its token marker."""
        try:
            node_id = (self.folder / ".tokens" / _token_file(token)).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return self._read(node_id) if NODE_ID.match(node_id) else None

    def _make_node_folder(self, node_id: str, metadata: dict[str, Any]) -> None:
        # The token marker is written before the folder appears, so a node that exists can
        # always be found by its token; a marker whose folder never appeared is ignored.
        tokens = self.folder / ".tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        _write_text(tokens / _token_file(metadata["token"]), node_id + "\n")

        staging = self.folder / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        (staging / "host").mkdir()
        (staging / "root").mkdir()
        _write_json(staging / NODE_METADATA, metadata)
        fsync_directory(staging)
        os.rename(staging, self.folder / node_id)
        fsync_directory(self.folder)

    def _read(self, node_id: str) -> dict[str, Any] | None:
        """Read a node's metadata into a dict of the caller's own, to change and write back."""
        _check_node_id(node_id)
        found = self._read_with_key(f"{self._folder_text}/{node_id}/{NODE_METADATA}")
        return found[1] if found else None

    def _peek(self, node_id: str) -> dict[str, Any] | None:
        """Return a node's metadata for reading only, from the cache while the file is unchanged.

        Refresh, the live holders of every attached volume and the sweep each look at every
        node. With the cache, one command parses each node.json once and then only stats it.
        """
        _check_node_id(node_id)
        # String paths: these run once per node, and a Path per node costs more.
        path = f"{self._folder_text}/{node_id}/{NODE_METADATA}"
        cached = self._cache.get(node_id)
        if cached is not None:
            try:
                if _file_key(os.stat(path)) == cached[0]:
                    return cached[1]
            except FileNotFoundError:
                self._cache.pop(node_id, None)
                return None
        found = self._read_with_key(path)
        if found is None:
            self._cache.pop(node_id, None)
            return None
        self._cache[node_id] = found
        return found[1]

    def _read_with_key(self, path: str) -> tuple[tuple[int, ...], dict[str, Any]] | None:
        # os.open and os.read: a buffered file object per node costs more than the read itself.
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            found = os.fstat(descriptor)
            chunks = [os.read(descriptor, found.st_size + 1)]
            while chunks[-1]:
                chunks.append(os.read(descriptor, 1 << 16))
        finally:
            os.close(descriptor)
        try:
            data: dict[str, Any] = json.loads(b"".join(chunks))
        except ValueError as error:
            raise ProviderError("Damaged local node", f"{path} is not valid JSON ({error}).") from None
        return _file_key(found), data

    def _require(self, node_id: str) -> dict[str, Any]:
        metadata = self._read(node_id)
        if metadata is None:
            raise ProviderError("Node not found", f"the local provider has no node {node_id} under {self.folder}.")
        return metadata

    def _write(self, node_id: str, metadata: dict[str, Any]) -> None:
        # The new file can get the old one's freed inode, and on a file system with coarse
        # times (whole seconds on ext3 or HFS+) the same key, so the cache cannot tell them apart.
        self._cache.pop(node_id, None)
        path = self._node_folder(node_id) / NODE_METADATA
        temporary = path.with_name(f".{NODE_METADATA}.tmp-{uuid.uuid4().hex[:8]}")
        _write_json(temporary, metadata)
        os.replace(temporary, path)
        fsync_directory(path.parent)

    def _all_metadata(self) -> Iterator[dict[str, Any]]:
        try:
            entries = sorted(os.scandir(self.folder), key=lambda entry: entry.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if NODE_ID.match(entry.name) and not entry.is_symlink():
                metadata = self._peek(entry.name)
                if metadata is not None:
                    yield metadata

    @contextmanager
    def locked(self, *, changes: bool = True) -> Iterator[None]:
        """Hold the nodes lock, for this process's threads and for other processes.

        With `changes`, the clean marker is removed before the body runs. It is put back only
        when the body returns and the marker was there before. So a body cut short by a kill or
        an error leaves it missing until a sweep has removed what the body left.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            descriptor = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                # Only a change that started clean may put the marker back, because a missing
                # marker means another change may have left files until a sweep removes them.
                was_clean = changes and (self._mark_busy() or self._is_unused())
                self._left_files = False
                yield
                if was_clean and not self._left_files:
                    self._mark_clean()
            finally:
                os.close(descriptor)

    def _is_clean(self) -> bool:
        return os.path.isfile(self.folder / CLEAN_MARKER)

    def _mark_busy(self) -> bool:
        """Remove the clean marker; return whether it was there."""
        try:
            os.unlink(self.folder / CLEAN_MARKER)
        except FileNotFoundError:
            return False
        # Durable before the change's first write, or a crash could keep the marker over a half-done change.
        fsync_directory(self.folder)
        return True

    def _is_unused(self) -> bool:
        """Return whether the folder contains nothing but the lock file, as before the first change."""
        with os.scandir(self.folder) as entries:
            return all(entry.name == ".lock" for entry in entries)

    def _mark_clean(self) -> None:
        # Not synced: a marker lost in a crash only costs the next sweep a full read.
        os.close(os.open(self.folder / CLEAN_MARKER, os.O_WRONLY | os.O_CREAT, FILE_MODE))


def _same_source(recorded: dict[str, Any], mount: MountSpec) -> bool:
    return recorded.get("volume_id") == mount.volume_id and recorded.get("instance_path") == mount.instance_path


def _facts(metadata: dict[str, Any], intact: set[str] | None = None) -> NodeFacts:
    mounts = {
        path: MountFacts(path, recorded.get("volume_id"), recorded.get("instance_path"))
        for path, recorded in metadata["mounts"].items()
        if intact is None or path in intact
    }
    return NodeFacts(
        id=metadata["id"],
        backend=metadata["backend"],
        region=metadata["region"],
        availability_zone=metadata.get("availability_zone"),
        created_at=metadata["created_at"],
        token=metadata.get("token"),
        mounts=mounts,
    )


@dataclass(frozen=True)
class _Leftovers:
    staging: int
    trash: int
    markers: int
    records: int
    claims: int

    def describe(self, root: Path, verb: str) -> list[str]:
        folder = root / "nodes"
        messages = []
        if self.staging:
            messages.append(f"{verb} {self.staging} temporary folder(s) of interrupted node starts under {folder}")
        if self.trash:
            messages.append(f"{verb} {self.trash} folder(s) of interrupted node stops under {folder}")
        if self.markers:
            messages.append(f"{verb} {self.markers} token marker(s) of nodes that no longer exist under {folder}")
        if self.records:
            messages.append(
                f"{verb} {self.records} mount record(s) without their link, left by interrupted attaches or detaches"
            )
        if self.claims:
            fixed = "corrected" if verb == "removed" else "found"
            messages.append(
                f"{fixed} {self.claims} volume attachment(s) under {root} that disagree with the node mounts, "
                "left by interrupted attaches or detaches"
            )
        return messages


def _token_file(token: str) -> str:
    # Tokens are hex digests; anything else is hashed so that it is a safe file name.
    return token if re.fullmatch(r"[0-9a-f]{1,64}", token) else hashlib.sha256(token.encode()).hexdigest()


def _write_text(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_node_id(node_id: str) -> None:
    if not NODE_ID.match(node_id):
        raise ProviderError("Node not found", f"{node_id} is not a local node id; local ids are i- and 17 hex digits.")


def _file_key(found: os.stat_result) -> tuple[int, ...]:
    """Return the key that distinguishes versions of a file: its device, inode, size and change times.

    NOTE: a freed inode is often reused at once, so on a file system with coarse times a write
    by another process within one tick, of a file of the same size, can keep the same key.
    This process's own writes drop the cached entry instead (see _write).
    """
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _links_to(link: str, target: str) -> bool:
    """Return whether `link` is a symbolic link to `target` (one readlink, no Path objects)."""
    try:
        return os.readlink(link) == target
    except OSError:  # missing, or not a symbolic link
        return False
