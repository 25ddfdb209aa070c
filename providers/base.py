"""The provider interface: what the executor and the refresh may ask of a cloud.

Every call is idempotent: creating with a token that was already used returns the volume it
made, deleting a missing volume succeeds. Provider errors are translated into the project's
error types inside each provider module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VolumeSpec:
    """What a create needs to know about a volume."""

    address: str
    name: str
    backend: str
    region: str | None
    availability_zone: str | None
    size_gb: int
    tags: Mapping[str, str]
    lineage: str


@dataclass(frozen=True)
class VolumeFacts:
    """A volume as the provider reports it."""

    id: str
    backend: str
    region: str | None
    availability_zone: str | None
    size_gb: int
    tags: Mapping[str, str]
    created_at: str
    status: str = "available"
    token: str | None = None
    # The lineage of the state whose apply created the volume, when the provider recorded it.
    lineage: str | None = None
    attachments: tuple[str, ...] = field(default=())
    # The name the provider keeps for the volume (AWS: its Name tag), when it keeps one.
    name: str | None = None
    # When the volume was last detached, or created if it never was, as ISO 8601 UTC; None
    # while it is attached or when the provider does not know. `volplan cleanup` reads it.
    idle_since: str | None = None


@dataclass(frozen=True)
class Capabilities:
    multi_attach: bool = False
    instance_volumes: bool = True
    regions: tuple[str, ...] = ()


class Provider(ABC):
    """A place where volumes live. `kind` is recorded in the state with every resource."""

    kind: str

    @abstractmethod
    def describe(self) -> str:
        """One line for the plan header, such as 'local provider at /home/me/.local/share/volplan'."""

    @abstractmethod
    def capabilities(self, backend: str) -> Capabilities: ...

    @abstractmethod
    def refresh_volumes(self, volume_ids: Iterable[str]) -> dict[str, VolumeFacts]:
        """Read many volumes at once. Ids the provider does not have are absent from the result."""

    @abstractmethod
    def read_volume(self, volume_id: str) -> VolumeFacts:
        """Read one volume, raising VolumeNotFound when it does not exist."""

    @abstractmethod
    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        """Create a volume; a second call with the same token returns the first volume."""

    @abstractmethod
    def update_volume(
        self, volume_id: str, *, size_gb: int | None, tags: Mapping[str, str] | None, name: str | None = None
    ) -> VolumeFacts:
        """Grow a volume, replace its user tags and rename it (AWS: the Name tag) in place."""

    @abstractmethod
    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume with its data; a volume that is already gone counts as deleted."""

    @abstractmethod
    def find_volumes_by_token(self, tokens: Iterable[str]) -> dict[str, VolumeFacts]:
        """Find volumes made by interrupted creates, by their idempotency tokens."""
