"""Simulated instance hosts for the local provider: run nodes and their mounts as folders.

Layout under the local provider's root:

    nodes/i-0123456789abcdef0/   one folder per node, named by its id ("i-" and 17 hex digits)
        node.json                id, backend, region, token, and every link this provider made
        host/                    the simulated host's file system: instance_path /mnt/cache is
                                 host/mnt/cache, never the real /mnt/cache
        root/                    the node's root tree: mount path /data is the link root/data
    nodes/.tmp-<uuid>/           a node being started; renamed into place when complete
    nodes/.tokens/<token>        the id of the node that a start with this idempotency token made

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
    ) -> None:
        self.root = root
        self.folder = root / "nodes"
        self._read_volume = read_volume
        self._write_volume = write_volume
        self._volume_data = volume_data
        self._capabilities = capabilities
        self._thread_lock = threading.Lock()

    # Nodes

    def start(self, spec: NodeSpec, token: str) -> NodeFacts:
        with self._locked():
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
        with self._locked():
            metadata = self._read(node_id)
            if metadata is None:
                log.info("stop of %s: already gone", node_id)
                return
            volumes = sorted(m["volume_id"] for m in metadata["mounts"].values() if m.get("volume_id"))
            if volumes:
                raise ProviderError(
                    "Node has attached volumes",
                    f"node {node_id} still has {', '.join(volumes)} attached; detach them before stopping it.",
                )
            for path in sorted(metadata["mounts"]):
                self._remove_link(node_id, metadata, path)

            # As with volumes, the rename makes the node disappear at once; removing the files
            # can then fail without leaving a folder that looks like a live node.
            trash = self.folder / f".trash-{uuid.uuid4().hex}"
            log.debug("stopping local node %s", node_id)
            os.rename(self._node_folder(node_id), trash)
            fsync_directory(self.folder)
            if metadata.get("token"):
                (self.folder / ".tokens" / _token_file(metadata["token"])).unlink(missing_ok=True)
            shutil.rmtree(trash, ignore_errors=True)
            log.debug("stopped local node %s", node_id)

    def refresh(self, node_ids: Iterable[str]) -> dict[str, NodeFacts]:
        found: dict[str, NodeFacts] = {}
        for node_id in set(node_ids):
            if not NODE_ID.match(node_id):
                continue
            metadata = self._read(node_id)
            if metadata is not None:
                found[node_id] = _facts(metadata, self._link_intact(node_id, metadata))
        log.debug("refreshed %d local nodes, %d found", len(set(node_ids)), len(found))
        return found

    def find_by_token(self, tokens: Iterable[str]) -> dict[str, NodeFacts]:
        wanted = set(tokens)
        return {m["token"]: _facts(m) for m in self._all_metadata() if m.get("token") in wanted}

    # Mounts

    def attach(self, mount: MountSpec) -> None:
        with self._locked():
            metadata = self._require(mount.node_id)
            recorded = metadata["mounts"].get(mount.path)
            if recorded is not None and _same_source(recorded, mount):
                if mount.path in self._link_intact(mount.node_id, metadata):
                    log.info("attach of %s at %s on %s: already attached", mount.source, mount.path, mount.node_id)
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
            if mount.volume_id is not None:
                target = self._claim_volume(mount, metadata)
            else:
                assert mount.instance_path is not None
                target = self._host_folder(mount.node_id, mount.instance_path)
                target.mkdir(parents=True, exist_ok=True)
            self._make_link(mount, metadata, target)

    def detach(self, mount: MountSpec, *, force: bool) -> bool:
        with self._locked():
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
            self._remove_link(mount.node_id, metadata, mount.path)
            self._write(mount.node_id, metadata)
            self._release_volume(mount)
            return True

    def has_vanished(self, holders: Iterable[str]) -> bool:
        """Return whether any of the node ids in a volume's attachments no longer exists."""
        return any(self._vanished(holder) for holder in holders)

    def release_vanished(self, volume_id: str) -> dict[str, Any] | None:
        """Release the volume from nodes that no longer exist; return its metadata as it is now."""
        with self._locked():
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

    def _claim_volume(self, mount: MountSpec, node: dict[str, Any]) -> Path:
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
        holders = [holder for holder in volume.get("attachments") or [] if holder != mount.node_id]
        if holders and not self._capabilities(volume["backend"]).multi_attach:
            raise ProviderError(
                "Volume in use",
                f"{mount.volume_id} is attached to {', '.join(holders)}; on {volume['backend']} a volume "
                "attaches to one node at a time. Stop that node's run, or mount another volume.",
            )
        if mount.node_id not in (volume.get("attachments") or []):
            volume["attachments"] = sorted([*holders, mount.node_id])
            self._write_volume(mount.volume_id, volume)
        return self._volume_data(mount.volume_id)

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
        return bool(NODE_ID.match(node_id)) and not (self.folder / node_id / NODE_METADATA).exists()

    def _release_volume(self, mount: MountSpec) -> None:
        if mount.volume_id is None:
            return
        volume = self._read_volume(mount.volume_id)
        if volume is None or mount.node_id not in (volume.get("attachments") or []):
            return
        volume["attachments"] = [holder for holder in volume["attachments"] if holder != mount.node_id]
        self._write_volume(mount.volume_id, volume)

    # Links

    def _make_link(self, mount: MountSpec, metadata: dict[str, Any], target: Path) -> None:
        link = self.root_path(mount.node_id, mount.path)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link, target_is_directory=True)
        metadata["mounts"][mount.path] = {
            "volume_id": mount.volume_id,
            "instance_path": mount.instance_path,
            "link": str(link),
            "target": str(target),
        }
        self._write(mount.node_id, metadata)
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
        _check_node_id(node_id)
        # A string path: refresh reads every node's metadata, and a Path per node costs more.
        path = os.path.join(self.folder, node_id, NODE_METADATA)
        try:
            with open(path, "rb") as handle:
                data: dict[str, Any] = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise ProviderError("Damaged local node", f"{path} is not valid JSON ({error}).") from None
        return data

    def _require(self, node_id: str) -> dict[str, Any]:
        metadata = self._read(node_id)
        if metadata is None:
            raise ProviderError("Node not found", f"the local provider has no node {node_id} under {self.folder}.")
        return metadata

    def _write(self, node_id: str, metadata: dict[str, Any]) -> None:
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
                metadata = self._read(entry.name)
                if metadata is not None:
                    yield metadata

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            descriptor = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)


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


def _links_to(link: str, target: str) -> bool:
    """Return whether `link` is a symbolic link to `target` (one readlink, no Path objects)."""
    try:
        return os.readlink(link) == target
    except OSError:  # missing, or not a symbolic link
        return False
