"""The built-in local provider: volumes are folders, so volplan runs without a cloud account.

Layout under the root (`VOLPLAN_LOCAL_ROOT`, by default the user's data directory):

    vol-0123456789abcdef0/     one folder per volume, named by its id
        volume.json            the metadata a cloud keeps (id, name, backend, region, size, tags,
                               token, attachments, created_at and last_detached_at)
        data/                  the volume's contents
    .tmp-<uuid>/               a volume being created; renamed into place when complete
    index.sqlite               a cache of every volume.json, rebuilt from the folders on mismatch

The folders are the truth. A create writes the metadata, idempotency token included, into a
temporary folder and renames it into place, so a crash never leaves a half-made volume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from engine.errors import ProviderError, VolumeNotFound
from providers.base import Capabilities, Provider, VolumeFacts, VolumeSpec
from state.store import FILE_MODE, fsync_directory

log = logging.getLogger(__name__)

VOLUME_ID = re.compile(r"^vol-[0-9a-f]{17}$")
METADATA = "volume.json"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# dstack's volume documentation: these backends let several runs mount one volume.
_MULTI_ATTACH_BACKENDS = frozenset({"runpod"})
_NO_INSTANCE_VOLUMES = frozenset({"runpod", "vastai", "kubernetes"})


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

    def describe(self) -> str:
        return f"the built-in local provider at {self.root}"

    def capabilities(self, backend: str) -> Capabilities:
        return Capabilities(
            multi_attach=backend in _MULTI_ATTACH_BACKENDS,
            instance_volumes=backend not in _NO_INSTANCE_VOLUMES,
        )

    # Reading

    def refresh_volumes(self, volume_ids: Iterable[str]) -> dict[str, VolumeFacts]:
        wanted = set(volume_ids)
        self._sync_index()
        found = {}
        for row in self._query("SELECT metadata FROM volumes"):
            facts = _facts(json.loads(row[0]))
            if facts.id in wanted:
                found[facts.id] = facts
        log.debug("refreshed %d local volumes, %d found", len(wanted), len(found))
        return found

    def read_volume(self, volume_id: str) -> VolumeFacts:
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            raise VolumeNotFound(
                "Volume not found",
                f"the local provider has no volume {volume_id} under {self.root}. "
                "Check the volume_id, or create the volume first.",
            )
        return _facts(metadata)

    def find_volumes_by_token(self, tokens: Iterable[str]) -> dict[str, VolumeFacts]:
        wanted = set(tokens)
        if not wanted:
            return {}
        self._sync_index(force=True)
        found = {}
        for row in self._query("SELECT metadata FROM volumes WHERE token IS NOT NULL"):
            facts = _facts(json.loads(row[0]))
            if facts.token in wanted:
                found[facts.token] = facts
        return found

    # Changing

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        existing = self._query("SELECT metadata FROM volumes WHERE token = ?", (token,))
        if existing:
            log.info("create of %s with token %s already done", spec.address, token)
            return _facts(json.loads(existing[0][0]))

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
        return _facts(metadata)

    def update_volume(
        self, volume_id: str, *, size_gb: int | None, tags: Mapping[str, str] | None, name: str | None = None
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
        self._write_metadata(volume_id, metadata)
        return _facts(metadata)

    def record_detached(self, volume_id: str, at: datetime | None = None) -> VolumeFacts:
        """Record that the volume was last detached at `at` (now by default), which starts its idle time."""
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            raise VolumeNotFound("Volume not found", f"cannot record a detach of {volume_id}: it does not exist.")
        when = at or datetime.now(timezone.utc)
        metadata["last_detached_at"] = when.astimezone(timezone.utc).strftime(TIME_FORMAT)
        self._write_metadata(volume_id, metadata)
        return _facts(metadata)

    def delete_volume(self, volume_id: str) -> None:
        folder = self._volume_folder(volume_id)
        metadata = self._read_metadata(volume_id)
        if metadata is None:
            log.info("delete of %s: already gone", volume_id)
            self._execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
            return
        if metadata.get("attachments"):
            raise ProviderError(
                "Volume in use",
                f"{volume_id} is attached to {', '.join(metadata['attachments'])}; detach it before deleting.",
            )

        # Renaming first makes the volume disappear at once; removing the files can then fail
        # or be interrupted without leaving a folder that looks like a live volume.
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        log.debug("deleting local volume %s", volume_id)
        os.rename(folder, trash)
        fsync_directory(self.root)
        self._execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
        shutil.rmtree(trash, ignore_errors=True)
        log.debug("deleted local volume %s", volume_id)

    # Folders

    def volume_data_path(self, volume_id: str) -> Path:
        return self._volume_folder(volume_id) / "data"

    def _volume_folder(self, volume_id: str) -> Path:
        if not VOLUME_ID.match(volume_id):
            raise VolumeNotFound(
                "Volume not found",
                f"{volume_id!s} is not a local volume id; local ids are vol- and 17 lowercase hex digits.",
            )
        return self.root / volume_id

    def _make_volume_folder(self, volume_id: str, metadata: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        (staging / "data").mkdir()
        _write_json(staging / METADATA, metadata)
        fsync_directory(staging)
        os.rename(staging, self.root / volume_id)
        fsync_directory(self.root)

    def _read_metadata(self, volume_id: str) -> dict[str, Any] | None:
        path = self._volume_folder(volume_id) / METADATA
        try:
            if path.is_symlink() or path.parent.is_symlink():
                raise ProviderError("Unexpected symbolic link", f"{path} is a link the local provider did not make.")
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise ProviderError("Damaged local volume", f"{path} is not valid JSON ({error}).") from None

    def _write_metadata(self, volume_id: str, metadata: dict[str, Any]) -> None:
        path = self._volume_folder(volume_id) / METADATA
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
            connection = sqlite3.connect(
                self.root / "index.sqlite", timeout=30, check_same_thread=False, isolation_level=None
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS volumes (id TEXT PRIMARY KEY, token TEXT, mtime_ns INTEGER, metadata TEXT)"
            )
            connection.execute("CREATE INDEX IF NOT EXISTS volumes_token ON volumes (token)")
            self._index = connection
        return self._index

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._connection().execute(sql, parameters).fetchall()

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._connection().execute(sql, parameters)

    def _index_metadata(self, metadata: dict[str, Any]) -> None:
        path = self.root / metadata["id"] / METADATA
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
            metadata = self._read_metadata(volume_id)
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
                continue
            try:
                found[entry.name] = os.stat(os.path.join(entry.path, METADATA)).st_mtime_ns
            except FileNotFoundError:
                continue
        return found


def _facts(metadata: dict[str, Any]) -> VolumeFacts:
    attachments = tuple(metadata.get("attachments") or ())
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _now() -> str:
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)
