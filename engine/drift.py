"""Drift: what changed outside volplan, found by comparing state records with provider facts.

Pure: no files, no providers. The refresh results come in as data, and the result gives both
what differs and what `volplan refresh` would write for each address.

Records and the facts they are compared with:

- a volume record (`kind: volume`, `id`) with the provider's `VolumeFacts`: deleted, resized,
  retagged, or attached to an instance that no mount in the state expects;
- a node record (`kind: node`, `id`: the instance id) with whether its instance still exists;
- a mount record (`kind: mount`, `volume_id`, and `node_id` or the `id` of the node whose
  address prefixes its own) with the attachments its volume reports: detached.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.actions import Record
from providers.base import VolumeFacts
from state.model import State


class DriftKind(str, enum.Enum):
    DELETED = "deleted"
    RESIZED = "resized"
    RETAGGED = "retagged"
    DETACHED = "detached"
    ATTACHED_ELSEWHERE = "attached-elsewhere"
    NODE_GONE = "node-gone"


@dataclass(frozen=True)
class Drift:
    """One difference between a state record and what its provider reports."""

    address: str
    kind: DriftKind
    resource_id: str | None
    # The recorded and the reported value of the field that differs.
    expected: Any
    actual: Any
    # The record `volplan refresh` writes at this address; None removes the address.
    refreshed: Record | None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind.value,
            "resource_id": self.resource_id,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass(frozen=True)
class ProviderFacts:
    """The refresh results, by state address. Addresses that were not refreshed are absent."""

    # None: the provider no longer has the volume.
    volumes: Mapping[str, VolumeFacts | None]
    # False: the node's instance no longer exists.
    nodes: Mapping[str, bool] = field(default_factory=dict)


def find_drift(state: State, facts: ProviderFacts) -> list[Drift]:
    """Return every difference between `state` and `facts`, sorted by address and kind."""
    resources = state.resources
    volumes: dict[str, Record] = {}
    volume_addresses: dict[Any, str] = {}
    # Each mount with the instance it expects its volume attached to, found once for both uses.
    mounts: list[tuple[Record, str | None]] = []
    found: list[Drift] = []
    for address, record in resources.items():
        kind = record.get("kind")
        if kind == "volume":
            volumes[address] = record
            volume_addresses[record.get("id")] = address
        elif kind == "mount":
            mounts.append((record, _mount_instance(record, resources)))
        elif kind == "node" and facts.nodes.get(address) is False:
            found.append(Drift(address, DriftKind.NODE_GONE, record.get("id"), "exists", "gone", None))

    expected_attachments = _expected_attachments(mounts)
    for address, record in volumes.items():
        if address in facts.volumes:
            found.extend(_volume_drift(record, facts.volumes[address], expected_attachments))
    for record, instance_id in mounts:
        found.extend(_mount_drift(record, instance_id, volume_addresses.get(record.get("volume_id")), facts))

    order = list(DriftKind)
    return sorted(found, key=lambda drift: (drift.address, order.index(drift.kind)))


def refreshed_state(state: State, drift: list[Drift]) -> State:
    """Return a copy of `state` with the refreshed facts, which is what `volplan refresh` writes."""
    refreshed = state.copy()
    for item in drift:
        if item.refreshed is None:
            refreshed.resources.pop(item.address, None)
        else:
            refreshed.resources[item.address] = dict(item.refreshed)
    return refreshed


def _volume_drift(
    record: Record, facts: VolumeFacts | None, expected_attachments: Mapping[str, set[str]]
) -> list[Drift]:
    address = record["address"]
    volume_id = record.get("id")
    if facts is None:
        return [Drift(address, DriftKind.DELETED, volume_id, "exists", "gone", None)]

    refreshed = _refreshed_volume(record, facts)
    found = []
    if record.get("size_gb") is not None and record["size_gb"] != facts.size_gb:
        found.append(Drift(address, DriftKind.RESIZED, volume_id, record["size_gb"], facts.size_gb, refreshed))
    if dict(record.get("tags") or {}) != dict(facts.tags):
        found.append(
            Drift(address, DriftKind.RETAGGED, volume_id, dict(record.get("tags") or {}), dict(facts.tags), refreshed)
        )

    # An attachment that no mount in the state expects cannot be written into the state, so
    # refresh keeps the record as it is and the drift stays until someone detaches it.
    foreign = sorted(set(facts.attachments) - expected_attachments.get(str(volume_id), set()))
    if foreign:
        found.append(Drift(address, DriftKind.ATTACHED_ELSEWHERE, volume_id, [], foreign, refreshed))
    return found


def _refreshed_volume(record: Record, facts: VolumeFacts) -> Record:
    updated = dict(record)
    updated["size_gb"] = facts.size_gb
    updated["tags"] = dict(facts.tags)
    updated["availability_zone"] = facts.availability_zone
    return updated


def _mount_drift(
    record: Record, instance_id: str | None, volume_address: str | None, facts: ProviderFacts
) -> list[Drift]:
    if volume_address is None or volume_address not in facts.volumes:
        return []
    volume = facts.volumes[volume_address]
    if volume is None or instance_id is None or instance_id in volume.attachments:
        return []
    return [Drift(record["address"], DriftKind.DETACHED, record.get("volume_id"), instance_id, None, None)]


def _expected_attachments(mounts: list[tuple[Record, str | None]]) -> dict[str, set[str]]:
    """Map each volume id to the instances it is attached to, according to the state's mounts."""
    expected: dict[str, set[str]] = {}
    for record, instance_id in mounts:
        if instance_id is not None and record.get("volume_id"):
            expected.setdefault(record["volume_id"], set()).add(instance_id)
    return expected


def _mount_instance(record: Record, resources: Mapping[str, Record]) -> str | None:
    instance_id = record.get("node_id")
    if isinstance(instance_id, str):
        return instance_id
    node_address = str(record["address"]).rpartition(".mount[")[0]
    node_instance = resources.get(node_address, {}).get("id")
    return node_instance if isinstance(node_instance, str) else None
