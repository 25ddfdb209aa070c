"""A state kept in S3, with its backup, lease lock and journal as objects beside it.

Every write of the state is conditional on the ETag this command read: If-Match when there was
a state, If-None-Match: * when there was none. A command that lost a race therefore gets a
clear error, and the other writer's state is never silently overwritten. This and the lease
lock need a store that honours conditional writes, as S3 has since November 2024.

This is the only module of `state/` that imports boto3 and botocore. It turns their errors
into volplan's StateError, and failed conditions into PreconditionFailed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from engine.errors import StateError
from state.files import write_file_atomically
from state.journal import Intent, JournalContents
from state.lease_lock import DEFAULT_LEASE_SECONDS, LeaseLock
from state.locking import LockInfo
from state.migrations import Migration
from state.model import State, parse_state
from state.object_journal import ObjectJournal, read_object_journal, remove_object_journal
from state.object_store import PreconditionFailed, StoredObject
from state.s3_location import S3Location
from state.storage import StateWriteError

log = logging.getLogger(__name__)

# S3 returns 412 PreconditionFailed when a condition fails, 409 ConditionalRequestConflict
# when two conditional writes of one key race, and 404 NoSuchKey for If-Match on a missing key.
_FAILED_CONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DELETE_BATCH = 1000


class S3Objects:
    """The `ObjectStore` calls on one S3 bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> StoredObject | None:
        log.debug("GET %s", self.describe(key))
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body: bytes = response["Body"].read()
        except ClientError as error:
            if _code(error) in _MISSING_CODES:
                return None
            raise self._translate(error, "reading", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "reading", key) from error
        return StoredObject(key, body, response["ETag"], response["LastModified"], _server_time(response))

    def put(self, key: str, body: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        conditions: dict[str, str] = {}
        if if_match:
            conditions["IfMatch"] = if_match
        elif if_none_match:
            conditions["IfNoneMatch"] = "*"
        log.debug("PUT %s %s", self.describe(key), conditions)
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **conditions)
        except ClientError as error:
            if conditions and _code(error) in _FAILED_CONDITION_CODES | _MISSING_CODES:
                raise PreconditionFailed(self.describe(key)) from error
            raise self._translate(error, "writing", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "writing", key) from error
        etag: str = response["ETag"]
        return etag

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        conditions = {"IfMatch": if_match} if if_match else {}
        log.debug("DELETE %s %s", self.describe(key), conditions)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, **conditions)
        except ClientError as error:
            if conditions and _code(error) in _FAILED_CONDITION_CODES | _MISSING_CODES:
                raise PreconditionFailed(self.describe(key)) from error
            raise self._translate(error, "deleting", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "deleting", key) from error

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, "listing", prefix) from error
        return sorted(keys)

    def delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (ClientError, BotoCoreError) as error:
                raise self._translate(error, "deleting", batch[0]["Key"]) from error
            failed = response.get("Errors", [])
            if failed:
                first = failed[0]
                raise StateError(
                    "S3 request failed",
                    f"deleting {len(failed)} objects such as {self.describe(first.get('Key', ''))} failed: "
                    f"{first.get('Code')}: {first.get('Message')}. Check the credentials' s3:DeleteObject permission.",
                )

    def _translate(self, error: Exception, action: str, key: str) -> StateError:
        where = self.describe(key)
        if isinstance(error, NoCredentialsError):
            return StateError(
                "No AWS credentials",
                f"{action} {where} needs AWS credentials, and boto3's standard chain found none. Set AWS_PROFILE, "
                "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role applies.",
            )
        if isinstance(error, BotoCoreError):
            return StateError("S3 request failed", f"{action} {where} failed: {error}. Check the endpoint and network.")
        code = _code(error) if isinstance(error, ClientError) else ""
        message = error.response.get("Error", {}).get("Message", "") if isinstance(error, ClientError) else ""
        if code == "NoSuchBucket":
            return StateError(
                "S3 bucket not found",
                f"{action} {where} failed: bucket {self.bucket} does not exist. Create it, or fix the bucket in "
                "--state or in volplan.yml's state: section.",
            )
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StateError(
                "Access to S3 state denied",
                f"{action} {where} failed: {code}: {message}. Use credentials allowed s3:GetObject, s3:PutObject, "
                f"s3:DeleteObject and s3:ListBucket on {self.bucket}.",
            )
        if code == "NotImplemented":
            return StateError(
                "Conditional writes not supported",
                f"{action} {where} failed: {code}: {message}. volplan's S3 state needs a store that honours "
                "If-Match and If-None-Match on PutObject, as S3 does.",
            )
        return StateError("S3 request failed", f"{action} {where} failed: {code}: {message}.")


class S3StateStore:
    """A state object in S3 with its backup, lock and journal beside it, under the same key."""

    def __init__(
        self,
        location: S3Location,
        objects: S3Objects,
        errored_folder: Path,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.location = location
        self.objects = objects
        self.key = location.key
        self.backup_key = location.key + ".backup"
        self.journal_prefix = location.key + ".journal/"
        self.errored_path = errored_folder / f"errored.{PurePosixPath(location.key).name}"
        self.state_lock = LeaseLock(objects, location.key + ".lock", location.url, lease_seconds)
        # The ETag of the state as last read; None after reading that there is no state.
        self._etag: str | None = None
        self._has_read = False
        self._first_read_text: str | None = None
        self._first_read_migration: Migration | None = None
        self._backup_written = False

    def describe(self) -> str:
        return self.location.url

    def read(self) -> State | None:
        text = self.read_text()
        if text is None:
            return None
        state = parse_state(text, self.location.url, self._existing_backup)
        if self._first_read_text is None:
            self._first_read_text = text
            self._first_read_migration = state.migration
        return state

    def read_text(self) -> str | None:
        found = self.objects.get(self.key)
        self._has_read = True
        self._etag = found.etag if found is not None else None
        if found is None:
            return None
        try:
            return found.body.decode("utf-8")
        except UnicodeDecodeError:
            backup = self._existing_backup()
            place = f"from {backup} or " if backup else ""
            raise StateError(
                "Damaged state file",
                f"{self.location.url} is not UTF-8 text. Restore it {place}from an earlier version of the object.",
            ) from None

    def _existing_backup(self) -> str | None:
        if self.backup_key not in self.objects.list_keys(self.backup_key):
            return None
        return self.objects.describe(self.backup_key)

    def write(self, state: State) -> None:
        self.write_text(state.to_text())
        log.info("wrote state %s (serial %d, %d resources)", self.location.url, state.serial, len(state.resources))

    def write_text(self, text: str) -> None:
        """Replace the state object with `text`, only if it is still the object this command read."""
        if not self._has_read:
            raise RuntimeError(f"{self.location.url} was written before it was read, so no ETag guards the write")
        try:
            self._write_backups()
            if self._etag is None:
                etag = self.objects.put(self.key, text.encode(), if_none_match=True)
            else:
                etag = self.objects.put(self.key, text.encode(), if_match=self._etag)
        except PreconditionFailed:
            raise StateWriteError("State changed since it was read", self._conflict_detail()) from None
        except StateError as error:
            raise StateWriteError(error.title, error.detail) from None
        self._etag = etag

    def _conflict_detail(self) -> str:
        read = f"with ETag {self._etag}" if self._etag else "when it did not exist yet"
        return (
            f"{self.location.url} was written by another command after this one read it {read}; "
            "nothing was overwritten. Another writer ignored or outlived the state lock. Run the command "
            "again: it reads the current state."
        )

    def _write_backups(self) -> None:
        if self._backup_written or self._first_read_text is None:
            return
        if self._first_read_migration is not None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            key = f"{self.key}.v{self._first_read_migration.from_version}-{stamp}.backup"
            self.objects.put(key, self._first_read_text.encode())
            log.info("kept the state as read in %s before upgrading it", self.objects.describe(key))
        self.objects.put(self.backup_key, self._first_read_text.encode())
        self._backup_written = True

    def write_errored(self, state: State) -> Path:
        write_file_atomically(self.errored_path, state.to_text())
        return self.errored_path

    def lock(self, command: str, timeout: float = 0.0) -> AbstractContextManager[LockInfo | None]:
        return self.state_lock.hold(command, timeout)

    def read_journal(self) -> JournalContents | None:
        return read_object_journal(self.objects, self.journal_prefix)

    def open_journal(self, lineage: str) -> ObjectJournal:
        return ObjectJournal(self.objects, self.journal_prefix, lineage)

    def remove_journal(self) -> None:
        remove_object_journal(self.objects, self.journal_prefix)

    def keep_journal_intents(self, lineage: str, intents: list[Intent]) -> None:
        # The new session is written before the old entries go, so a crash in between leaves
        # the intents recorded twice (harmless: a token lookup is idempotent), never not at all.
        old_keys = self.objects.list_keys(self.journal_prefix)
        journal = ObjectJournal(self.objects, self.journal_prefix, lineage)
        journal.add_intents(intents)
        superseded = [key for key in old_keys if not key.startswith(journal.session_prefix)]
        if superseded:
            self.objects.delete_keys(superseded)

    def describe_journal(self) -> str:
        return self.objects.describe(self.journal_prefix)

    def remove_stale_temporaries(self) -> int:
        """Object writes are atomic, so a killed writer leaves nothing behind."""
        return 0


def open_s3_store(
    location: S3Location, errored_folder: Path, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> S3StateStore:
    """Connect to the bucket with boto3's standard chain for what `location` leaves unset."""
    session = boto3.session.Session()
    client = session.client(
        "s3",
        region_name=location.region,
        endpoint_url=location.endpoint_url,
        config=Config(retries={"mode": "standard"}),
    )
    return S3StateStore(location, S3Objects(client, location.bucket), errored_folder, lease_seconds)


def _code(error: ClientError) -> str:
    code: str = error.response.get("Error", {}).get("Code", "")
    return code


def _server_time(response: dict[str, Any]) -> datetime | None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
