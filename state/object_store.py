"""The few calls of an object store (such as S3) that a shared state needs, without the SDK.

The lease lock and the object journal are written against `ObjectStore`, so that only the S3
store itself imports botocore. A store must honour conditional writes as S3 does: a put with
`if_none_match` creates the object only if it does not exist, and a put or delete with
`if_match` changes it only while its ETag is still the one given. Either way a failed
condition raises `PreconditionFailed` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class PreconditionFailed(Exception):
    """A conditional write or delete found the object changed, present or missing."""


@dataclass(frozen=True)
class StoredObject:
    """One object as read: its body, its ETag, and two times from the store's own clock."""

    key: str
    body: bytes
    etag: str
    last_modified: datetime
    # The store's time when it answered the read, or None when it did not say.
    server_time: datetime | None


class ObjectStore(Protocol):
    """One bucket (or folder) of objects, addressed by key."""

    def describe(self, key: str) -> str:
        """Name an object for people, such as s3://bucket/key."""

    def get(self, key: str) -> StoredObject | None:
        """Read an object, or return None when there is no object at `key`."""

    def put(self, key: str, body: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write an object and return its new ETag; raises PreconditionFailed when a condition fails."""

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete an object; raises PreconditionFailed when `if_match` no longer names it."""

    def list_keys(self, prefix: str) -> list[str]:
        """List the keys under `prefix` in ascending order."""

    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete many objects; keys that are already gone are not an error."""
