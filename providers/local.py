"""The built-in local provider: volumes are folders, so volplan runs without a cloud account.

Layout under the root (`VOLPLAN_LOCAL_ROOT`, by default the user's data directory):

    vol-0123456789abcdef0/     one folder per volume, named by its id
        volume.json            the metadata a cloud keeps (id, name, backend, region, size, tags,
                               token, attachments, created_at and last_detached_at)
        data/                  the volume's contents
    .tmp-<uuid>/               a volume being created; renamed into place when complete
    .trash-<uuid>/             a deleted volume whose files are being removed
    index.sqlite               a cache of every volume.json, rebuilt from the folders on mismatch
    nodes/                     simulated instance hosts for run nodes (see providers/local_nodes.py)

The folders are the truth. A create writes the metadata, idempotency token included, into a
temporary folder and renames it into place, so a crash never leaves a half-made volume. The
creator holds an flock on the temporary folder until the rename, so `remove_leftovers` can tell
the folder of a killed create from one still being filled by another process.

Every path below the root is checked by `providers.local_paths.path_inside_root`: the provider
makes no symbolic links for volumes, so any link found in a volume's path is rejected. A volume
whose `volume.json` is damaged, or is not in the folder its id names, is reported, never guessed at.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from engine.errors import ProviderError, VolumeNotFound
from providers.base import (
    Capabilities,
    MountSpec,
    NodeFacts,
    NodeSpec,
    Provider,
    VolumeFacts,
    VolumeSpec,
    backend_rules,
)
from providers.local_nodes import HOLD_DETACH_MARKER, LocalNodes
from providers.local_paths import RecordedLinks, path_inside_root
from state.files import read_bounded
from state.store import FILE_MODE, fsync_directory

log = logging.getLogger(__name__)

VOLUME_ID = re.compile(r"^vol-[0-9a-f]{17}$")
METADATA = "volume.json"
STAGING_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
INDEX = "index.sqlite"
# Fields every volume.json must have, with their JSON types.
_METADATA_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "backend": str,
    "size_gb": int,
    "created_at": str,
    "tags": dict,
    "attachments": list,
}

# The region a run goes to when nothing constrains its location. The local provider accepts
# any region name that a configuration gives.
DEFAULT_REGION = "local-1"


def local_capabilities(backend: str) -> Capabilities:
    """Return the rules of `backend` as the local provider simulates it."""
    return dataclasses.replace(backend_rules(backend), regions=(DEFAULT_REGION,))


def default_root() -> Path:
    configured = os.environ.get("VOLPLAN_LOCAL_ROOT")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("volplan")) / "local"


def new_volume_id() -> str:
    return "vol-" + uuid.uuid4().hex[:17]


class LocalProvider(Provider):
    """Volumes as folders under one root; thread-safe, and safe for several processes."""

    kind = "local"

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).absolute()
        self._lock = threading.Lock()
        self._index: sqlite3.Connection | None = None
        self._synced = False
        self.nodes = LocalNodes(
            self.root,
            self._read_metadata,
            self._write_metadata,
            self.volume_data_path,
            self.capabilities,
            self._claimed_volumes,
        )
        # Volume folders that the last index sync could not read, with the error to report.
        self._unreadable: dict[str, ProviderError] = {}

    def describe(self) -> str:
        return f"the built-in local provider at {self.root}"

    def capabilities(self, backend: str) -> Capabilities:
        return local_capabilities(backend)

    # Reading

    def refresh_volumes(
        self, volume_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, VolumeFacts]:
        wanted = set(volume_ids)
        self._sync_index()
        for volume_id in sorted(wanted & self._unreadable.keys()):
            # Reporting the volume as gone would plan to create it again over its data.
            raise self._unreadable[volume_id]
        # Only the state's volumes are parsed: the root may hold many other projects' volumes. One
        # json.loads over all of them costs less than a call per volume.
        rows = [
            (volume_id, text)
            for volume_id, text in self._query("SELECT id, metadata FROM volumes")
            if volume_id in wanted
        ]
        parsed = json.loads(f"[{','.join(text for _, text in rows)}]")
        found = {
            volume_id: self._current_facts(metadata) for (volume_id, _), metadata in zip(rows, parsed, strict=True)
        }
        log.debug("refreshed %d local volumes, %d found", len(wanted), len(found))
        return found

    def read_volume(self, volume_id: str, region: str | None = None) -> VolumeFacts:
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            raise VolumeNotFound(
                "Volume not found",
                f"the local provider has no volume {volume_id} under {self.root}. "
                "Check the volume_id, or create the volume first.",
            )
        return self._current_facts(metadata)

    def find_volumes_by_token(
        self, tokens: Iterable[str], regions: Iterable[str | None] = ()
    ) -> dict[str, VolumeFacts]:
        wanted = set(tokens)
        if not wanted:
            return {}
        self._sync_index(force=True)
        found = {}
        for row in self._query("SELECT metadata FROM volumes WHERE token IS NOT NULL"):
            metadata = json.loads(row[0])
            if metadata.get("token") in wanted:
                found[metadata["token"]] = self._current_facts(metadata)
        return found

    # Changing

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        existing = self._query("SELECT metadata FROM volumes WHERE token = ?", (token,))
        if existing:
            log.info("create of %s with token %s already done", spec.address, token)
            return self._volume_facts(json.loads(existing[0][0]))

        volume_id = new_volume_id()
        metadata: dict[str, Any] = {
            "id": volume_id,
            "name": spec.name,
            "address": spec.address,
            "lineage": spec.lineage,
            "backend": spec.backend,
            "region": spec.region,
            "availability_zone": spec.availability_zone,
            "size_gb": spec.size_gb,
            "tags": dict(spec.tags),
            "token": token,
            "created_at": _now(),
            "attachments": [],
        }
        log.debug("creating local volume %s for %s", volume_id, spec.address)
        self._make_volume_folder(volume_id, metadata)
        self._index_metadata(metadata)
        log.debug("created local volume %s", volume_id)
        return self._volume_facts(metadata)

    def update_volume(
        self,
        volume_id: str,
        *,
        size_gb: int | None,
        tags: Mapping[str, str] | None,
        region: str | None = None,
        name: str | None = None,
    ) -> VolumeFacts:
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            raise VolumeNotFound(
                "Volume not found", f"cannot update {volume_id}: it no longer exists under {self.root}."
            )
        if size_gb is not None:
            if size_gb < metadata["size_gb"]:
                raise ProviderError(
                    "Volume cannot shrink", f"{volume_id} is {metadata['size_gb']} GB; sizes only grow."
                )
            metadata["size_gb"] = size_gb
        if tags is not None:
            metadata["tags"] = dict(tags)
        if name is not None:
            log.debug("renaming local volume %s from %s to %s", volume_id, metadata.get("name"), name)
            metadata["name"] = name
            # A volume's address is volume.NAME, so the informational address follows the name.
            metadata["address"] = f"volume.{name}"
        self._write_metadata(volume_id, metadata)
        return self._volume_facts(metadata)

    def record_detached(self, volume_id: str, at: datetime | None = None) -> VolumeFacts:
        """Record that the volume was last detached at `at` (now by default), which starts its idle time."""
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            raise VolumeNotFound("Volume not found", f"cannot record a detach of {volume_id}: it does not exist.")
        when = at or datetime.now(timezone.utc)
        metadata["last_detached_at"] = when.astimezone(timezone.utc).strftime(TIME_FORMAT)
        self._write_metadata(volume_id, metadata)
        return self._volume_facts(metadata)

    def delete_volume(self, volume_id: str, region: str | None = None) -> None:
        folder = self._volume_folder(volume_id)
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            log.info("delete of %s: already gone", volume_id)
            self._execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
            return
        if metadata.get("attachments") and self.nodes.has_vanished(metadata["attachments"]):
            # Outside the nodes lock below: the release takes that lock itself.
            self.nodes.release_vanished(volume_id)
        # Under the nodes lock no attach is half done, so the live holders are exact. The delete
        # changes no node: an interrupted one leaves only a trash folder, which the root's sweep finds.
        with self.nodes.locked(changes=False):
            holders = self.nodes.live_holders(volume_id, metadata.get("attachments") or [])
            if holders:
                raise ProviderError(
                    "Volume in use", f"{volume_id} is attached to {', '.join(holders)}; detach it before deleting."
                )

            # Renaming first makes the volume disappear at once. Removing its files can then fail
            # or be interrupted, and no folder that looks like a live volume is left behind.
            trash = self.root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
            log.debug("deleting local volume %s", volume_id)
            os.rename(folder, trash)
            fsync_directory(self.root)
        self._execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
        shutil.rmtree(trash, ignore_errors=True)
        log.debug("deleted local volume %s", volume_id)

    def _current_facts(self, metadata: dict[str, Any]) -> VolumeFacts:
        """Release the volume from nodes removed outside volplan, as a terminated instance would,
        and report only the holders that a node still backs."""
        attachments = metadata.get("attachments")
        if not attachments:
            return _facts(metadata)
        live, vanished = self.nodes.sort_claims(metadata["id"], attachments)
        if vanished:
            metadata = self.nodes.release_vanished(metadata["id"]) or metadata
            live = self.nodes.live_holders(metadata["id"], metadata.get("attachments") or [])
        return _facts(metadata, live)

    # Nodes and mounts (simulated instance hosts)

    def start_node(self, spec: NodeSpec, token: str) -> NodeFacts:
        return self.nodes.start(spec, token)

    def stop_node(self, node_id: str, region: str | None = None) -> None:
        self.nodes.stop(node_id)

    def refresh_nodes(
        self, node_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, NodeFacts]:
        return self.nodes.refresh(node_ids)

    def find_nodes_by_token(self, tokens: Iterable[str], regions: Iterable[str | None] = ()) -> dict[str, NodeFacts]:
        return self.nodes.find_by_token(tokens)

    def attach_volume(self, mount: MountSpec) -> None:
        self.nodes.attach(mount)

    def detach_volume(self, mount: MountSpec, *, force: bool) -> bool:
        return self.nodes.detach(mount, force=force)

    def hold_detach(self, volume_id: str) -> None:
        """Make detaches of `volume_id` stay in progress until released or forced (for tests)."""
        marker = self._volume_folder(volume_id) / HOLD_DETACH_MARKER
        marker.touch()

    def release_detach(self, volume_id: str) -> None:
        (self._volume_folder(volume_id) / HOLD_DETACH_MARKER).unlink(missing_ok=True)

    # Folders

    def volume_data_path(self, volume_id: str) -> Path:
        self._volume_folder(volume_id)
        return self.path(f"{volume_id}/data")

    def path(self, relative: str) -> Path:
        """Return a checked path below the root; see providers.local_paths."""
        return path_inside_root(self.root, relative, self.recorded_links())

    def recorded_links(self) -> RecordedLinks:
        """The symbolic links this provider made and recorded; volumes make none."""
        return {}

    def _volume_folder(self, volume_id: str) -> Path:
        if not isinstance(volume_id, str) or not VOLUME_ID.fullmatch(volume_id):
            raise VolumeNotFound(
                "Volume not found",
                f"{volume_id!r} is not a local volume id; local ids are vol- and 17 lowercase hex digits.",
            )
        return self.path(volume_id)

    def _make_volume_folder(self, volume_id: str, metadata: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging, descriptor = self._new_staging_folder()
        try:
            (staging / "data").mkdir()
            _write_json(staging / METADATA, metadata)
            fsync_directory(staging)
            os.rename(staging, self.root / volume_id)
            fsync_directory(self.root)
        finally:
            os.close(descriptor)

    def _new_staging_folder(self) -> tuple[Path, int]:
        """Make a temporary folder and lock it; return it with the descriptor that holds the lock."""
        for _ in range(3):
            staging = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                descriptor = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if _is_same_folder(staging, descriptor):
                return staging, descriptor
            # Another process removed the folder between mkdir and flock, taking it for a leftover.
            os.close(descriptor)
        raise ProviderError(
            "Local volume not created",
            f"the temporary folders for a new volume under {self.root} were removed three times while being made. "
            "Check that nothing else deletes folders there, then run apply again.",
        )

    # Leftovers of interrupted calls

    def find_leftovers(self) -> list[str]:
        found = _describe_leftovers(self._sweep_leftovers(remove=False), self.root, "found")
        return found + self.nodes.sweep_leftovers(remove=False)

    def remove_leftovers(self) -> list[str]:
        removed = self._sweep_leftovers(remove=True)
        if removed:
            log.info("removed %d leftover folders under %s", len(removed), self.root)
        return _describe_leftovers(removed, self.root, "removed") + self.nodes.sweep_leftovers(remove=True)

    def _sweep_leftovers(self, *, remove: bool) -> list[Path]:
        """List (and with `remove`, delete) the temporary folders of killed creates and the
        trash folders of interrupted deletes."""
        try:
            # Only leftovers are sorted, because the root contains a folder per volume.
            entries = [
                entry for entry in os.scandir(self.root) if entry.name.startswith((TRASH_PREFIX, STAGING_PREFIX))
            ]
        except FileNotFoundError:
            return []
        swept = []
        for entry in sorted(entries, key=lambda entry: entry.name):
            if entry.is_symlink() or not entry.is_dir():
                continue
            path = Path(entry.path)
            if entry.name.startswith(TRASH_PREFIX):
                # The volume is already gone and only its files remain, so removing them is safe even while
                # the deleting process is still removing them too.
                if remove:
                    shutil.rmtree(path, ignore_errors=True)
                swept.append(path)
            elif entry.name.startswith(STAGING_PREFIX) and _sweep_abandoned_staging(path, remove=remove):
                swept.append(path)
        return swept

    def _claimed_volumes(self) -> list[str]:
        """Return the ids of the volumes whose volume.json lists attachments."""
        self._sync_index(force=True)
        rows = self._query("SELECT metadata FROM volumes")
        return [metadata["id"] for metadata in (json.loads(row[0]) for row in rows) if metadata.get("attachments")]

    def _volume_facts(self, metadata: dict[str, Any]) -> VolumeFacts:
        """Return the volume's facts, attached only to the nodes that have a link to it, because an
        attach or detach killed half way leaves a claim in volume.json that no node backs."""
        if metadata.get("attachments"):
            return _facts(metadata, self.nodes.live_holders(metadata["id"], metadata["attachments"]))
        return _facts(metadata)

    def _read_metadata(self, volume_id: str) -> dict[str, Any] | None:
        self._volume_folder(volume_id)
        path = self.path(f"{volume_id}/{METADATA}")
        try:
            descriptor, size = _open_regular(str(path))
            try:
                raw = read_bounded(descriptor, size, _MAX_METADATA_BYTES)
            finally:
                os.close(descriptor)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ProviderError("Damaged local volume", f"{path} cannot be read ({error.strerror}).") from None
        return _check_metadata(path, volume_id, raw)

    def _write_metadata(self, volume_id: str, metadata: dict[str, Any]) -> None:
        self._volume_folder(volume_id)
        path = self.path(f"{volume_id}/{METADATA}")
        previous = self._read_metadata(volume_id) or {}
        detached = previous.get("attachments") and not metadata.get("attachments")
        if detached and metadata.get("last_detached_at") == previous.get("last_detached_at"):
            # The last attachment ended and the caller did not record when: the idle time that
            # cleanup measures starts now, whichever method detached the volume.
            metadata["last_detached_at"] = _now()
        temporary = path.with_name(f".{METADATA}.tmp-{uuid.uuid4().hex[:8]}")
        _write_json(temporary, metadata)
        os.replace(temporary, path)
        fsync_directory(path.parent)
        self._index_metadata(metadata)

    # Index

    def _connection(self) -> sqlite3.Connection:
        if self._index is None:
            self.root.mkdir(parents=True, exist_ok=True)
            for name in (INDEX, f"{INDEX}-wal", f"{INDEX}-shm"):
                path = self.path(name)
                if path.exists() and not path.is_file():
                    raise ProviderError(
                        "Unusable local index", f"{path} is not a regular file. Remove it; volplan rebuilds the index."
                    )
            try:
                self._index = _open_index(self.path(INDEX))
            except sqlite3.DatabaseError as error:
                # The index is a cache of the volume folders: a damaged one is set aside and rebuilt.
                damaged = self.path(f"{INDEX}.damaged-{uuid.uuid4().hex[:8]}")
                log.warning("local index %s is damaged (%s); moved to %s and rebuilt", INDEX, error, damaged)
                os.rename(self.path(INDEX), damaged)
                for suffix in ("-wal", "-shm"):
                    self.path(INDEX + suffix).unlink(missing_ok=True)
                self._index = _open_index(self.path(INDEX))
                self._synced = False
        return self._index

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._connection().execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                raise _index_error(self.root, error) from None

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> None:
        with self._lock:
            try:
                self._connection().execute(sql, parameters)
            except sqlite3.Error as error:
                raise _index_error(self.root, error) from None

    def _index_metadata(self, metadata: dict[str, Any]) -> None:
        path = self.path(f"{metadata['id']}/{METADATA}")
        self._execute(
            "INSERT OR REPLACE INTO volumes (id, token, mtime_ns, metadata) VALUES (?, ?, ?, ?)",
            (metadata["id"], metadata.get("token"), path.stat().st_mtime_ns, json.dumps(metadata)),
        )

    def _sync_index(self, force: bool = False) -> None:
        """Bring the index in line with the volume folders, which are the truth."""
        with self._lock:
            if self._synced and not force:
                return
            self._synced = True
        on_disk = self._scan_folders()
        indexed = {row[0]: row[1] for row in self._query("SELECT id, mtime_ns FROM volumes")}

        gone = [volume_id for volume_id in indexed if volume_id not in on_disk]
        changed = [volume_id for volume_id, mtime in on_disk.items() if indexed.get(volume_id) != mtime]
        for volume_id in gone:
            self._execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
        for volume_id in changed:
            try:
                metadata = self._read_metadata(volume_id)
            except ProviderError as error:
                log.warning("local volume %s is unreadable: %s", volume_id, error.detail)
                self._unreadable[volume_id] = error
                self._execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
                continue
            self._unreadable.pop(volume_id, None)
            if metadata is not None:
                self._index_metadata(metadata)
        if gone or changed:
            log.info("local index rebuilt: %d removed, %d read from folders", len(gone), len(changed))

    def _scan_folders(self) -> dict[str, int]:
        found: dict[str, int] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return found
        for entry in entries:
            if not VOLUME_ID.match(entry.name):
                continue
            if entry.is_symlink():
                log.warning("ignoring %s: a symbolic link the local provider did not make", entry.path)
                self._unreadable[entry.name] = ProviderError(
                    "Unexpected symbolic link",
                    f"{entry.path} is a symbolic link the local provider did not make. Remove it; "
                    "the local provider never follows links it did not record.",
                )
                continue
            try:
                found[entry.name] = os.stat(f"{entry.path}/{METADATA}").st_mtime_ns
            except FileNotFoundError:
                continue
        return found


def _is_same_folder(path: Path, descriptor: int) -> bool:
    try:
        found = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino)


def _sweep_abandoned_staging(path: Path, *, remove: bool) -> bool:
    """Check whether `path` is the temporary folder of a create whose process died.

    With `remove`, delete it while holding its lock, so that no creator can be filling it.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # The creator may have renamed the folder into place between the scan and the lock.
        if not _is_same_folder(path, descriptor):
            return False
        if remove:
            shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(descriptor)


def _describe_leftovers(folders: list[Path], root: Path, verb: str) -> list[str]:
    staging = sum(1 for folder in folders if folder.name.startswith(STAGING_PREFIX))
    trash = len(folders) - staging
    messages = []
    if staging:
        messages.append(f"{verb} {staging} temporary folder(s) of interrupted local creates under {root}")
    if trash:
        messages.append(f"{verb} {trash} folder(s) of interrupted local deletes under {root}")
    return messages


def _facts(metadata: dict[str, Any], holders: list[str] | None = None) -> VolumeFacts:
    """Return the facts of a volume.json, with `holders` in place of its attachments when given."""
    attachments = tuple(metadata.get("attachments") or () if holders is None else holders)
    idle_since = None if attachments else metadata.get("last_detached_at") or metadata["created_at"]
    return VolumeFacts(
        id=metadata["id"],
        backend=metadata["backend"],
        region=metadata.get("region"),
        availability_zone=metadata.get("availability_zone"),
        size_gb=metadata["size_gb"],
        tags=dict(metadata.get("tags") or {}),
        created_at=metadata["created_at"],
        status="in-use" if attachments else "available",
        token=metadata.get("token"),
        lineage=metadata.get("lineage"),
        attachments=attachments,
        name=metadata.get("name"),
        idle_since=idle_since,
    )


_MAX_METADATA_BYTES = 1024 * 1024


def _open_regular(path: str) -> tuple[int, int]:
    """Open a regular file for reading without following a link; return its descriptor and size."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    found = os.fstat(descriptor)
    if not stat.S_ISREG(found.st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file")
    return descriptor, found.st_size


def _check_metadata(path: Path, volume_id: str, raw: bytes) -> dict[str, Any]:
    """Parse a volume.json and check the fields the provider reads."""
    if len(raw) > _MAX_METADATA_BYTES:
        raise ProviderError("Damaged local volume", f"{path} is larger than {_MAX_METADATA_BYTES} bytes.")
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise ProviderError("Damaged local volume", f"{path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ProviderError("Damaged local volume", f"{path} does not hold a JSON object.")
    for name, expected in _METADATA_FIELDS.items():
        value = data.get(name, [] if name == "attachments" else {} if name == "tags" else None)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProviderError(
                "Damaged local volume", f"{path}: {name} is {json.dumps(value)[:80]}, of the wrong type."
            )
    if data["id"] != volume_id:
        raise ProviderError(
            "Damaged local volume", f"{path} describes volume {json.dumps(data['id'])[:80]}, not {volume_id}."
        )
    return data


def _open_index(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS volumes (id TEXT PRIMARY KEY, token TEXT, mtime_ns INTEGER, metadata TEXT)"
        )
        connection.execute("CREATE INDEX IF NOT EXISTS volumes_token ON volumes (token)")
    except sqlite3.DatabaseError:
        connection.close()
        raise
    return connection


def _index_error(root: Path, error: sqlite3.Error) -> ProviderError:
    return ProviderError(
        "Unusable local index",
        f"{root / INDEX}: {error}. Remove it (the volume folders are the truth) and run the command again.",
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _now() -> str:
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)
