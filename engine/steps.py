"""Carry out one change: the provider calls for its action, recorded in the journal.

An intent is written before each call that creates or destroys something, and the resulting
record (or its removal) right after, so every finished step is durable before any step that
depends on it starts.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid

from engine.actions import Action, Change, Record
from engine.errors import VolumeNotFound
from engine.executor import Events, StepOutcome
from engine.planner import STATE_ONLY_FIELDS
from engine.run_planner import RUN_KINDS
from engine.run_steps import RunSteps, node_record_from_facts
from providers.base import NodeFacts, VolumeFacts, VolumeSpec
from providers.registry import ProviderSet
from state.journal import Intent
from state.storage import JournalWriter

log = logging.getLogger(__name__)


def make_token(lineage: str, address: str, intent_id: str) -> str:
    """Make an idempotency token: the same for a retried call, new for a later re-create."""
    return hashlib.sha256(f"{lineage}\n{address}\n{intent_id}".encode()).hexdigest()[:40]


def record_from_facts(after: Record, facts: VolumeFacts) -> Record:
    record = dict(after)
    record["id"] = facts.id
    record["availability_zone"] = facts.availability_zone
    record["size_gb"] = facts.size_gb
    record["created_at"] = facts.created_at
    if facts.volume_type is not None:
        record["volume_type"] = facts.volume_type
    if after.get("external"):
        record["tags"] = dict(facts.tags)
        record["region"] = facts.region
    return record


class StepRunner:
    """Runs changes against providers; every result goes to the journal and to `results`."""

    def __init__(
        self, providers: ProviderSet, journal: JournalWriter, lineage: str, events: Events | None = None
    ) -> None:
        self.providers = providers
        self.journal = journal
        self.lineage = lineage
        self.results: list[tuple[str, Record | None]] = []
        self._latest: dict[str, Record | None] = {}
        self._lock = threading.Lock()
        self._runs = RunSteps(
            providers,
            journal,
            lineage,
            record=self._record,
            latest=self.latest,
            warn=(events or Events()).warning,
            make_token=lambda address, intent_id: make_token(lineage, address, intent_id),
            waiting=(events or Events()).step_waiting,
        )

    def latest(self, address: str) -> Record | None:
        """Return the record that this apply left at `address`, if a step changed it."""
        with self._lock:
            return self._latest.get(address)

    def __call__(self, change: Change) -> StepOutcome:
        """Carry out `change`; return the provider id of the resource it leaves, if any."""
        if (change.after or change.before or {}).get("kind") in RUN_KINDS:
            return self._runs(change)
        handlers = {
            Action.CREATE: self._create,
            Action.REGISTER: self._register,
            Action.UPDATE: self._update,
            Action.REPLACE: self._replace,
            Action.DELETE: self._delete,
            Action.DEREGISTER: self._deregister,
        }
        handlers[change.action](change)
        if change.previous_address is not None and change.previous_address != change.address:
            # A rename under moved: drops the old address only once the new one is recorded. After a
            # stop in between, state.journal.fold_results drops the old address when it saves the state.
            self._record(None, change.previous_address, None)
        with self._lock:
            record = self._latest.get(change.address)
        return record.get("id") if record else None

    def _record(self, seq: int | None, address: str, record: Record | None) -> None:
        self.journal.done(seq, address, record)
        with self._lock:
            self.results.append((address, record))
            self._latest[address] = record

    def adopt(self, intent: Intent, facts: VolumeFacts | NodeFacts) -> None:
        """Record the volume or node that a create which raised made after all, found by its token."""
        assert intent.record is not None
        if isinstance(facts, NodeFacts):
            record = node_record_from_facts(intent.record, facts)
        else:
            record = record_from_facts(intent.record, facts)
        with self._lock:
            self.results.append((intent.address, record))
            self._latest[intent.address] = record
        try:
            self.journal.done(intent.seq, intent.address, record)
        except OSError as error:
            # The result is in `results`, so the state written next still contains it.
            log.warning("could not journal the adopted resource %s of %s: %s", facts.id, intent.address, error)

    def _create(self, change: Change) -> None:
        after = change.after
        assert after is not None
        provider = self.providers.by_kind(after["provider"], after["backend"])
        token = make_token(self.lineage, change.address, uuid.uuid4().hex)
        seq = self.journal.intent(change.address, Action.CREATE.value, token, after)
        spec = VolumeSpec(
            address=change.address,
            name=after["name"],
            backend=after["backend"],
            region=after["region"],
            availability_zone=after["availability_zone"],
            size_gb=after["size_gb"],
            tags=after["tags"],
            lineage=self.lineage,
        )
        facts = provider.create_volume(spec, token)
        self._record(seq, change.address, record_from_facts(after, facts))

    def _register(self, change: Change) -> None:
        after = change.after
        assert after is not None
        provider = self.providers.by_kind(after["provider"], after["backend"])
        facts = provider.read_volume(after["id"], after.get("region"))
        self._record(None, change.address, record_from_facts(after, facts))

    def _update(self, change: Change) -> None:
        before, after = change.before, change.after
        assert before is not None and after is not None
        record = dict(after)
        provider_fields = [name for name in change.changed_fields if name not in STATE_ONLY_FIELDS]
        renamed = "name" in change.changed_fields
        if (provider_fields or renamed) and not after.get("external"):
            provider = self.providers.by_kind(after["provider"], after["backend"])
            facts = provider.update_volume(
                after["id"],
                size_gb=after["size_gb"] if "size_gb" in provider_fields else None,
                tags=after["tags"] if "tags" in provider_fields else None,
                region=after.get("region"),
                name=after["name"] if renamed else None,
            )
            record = record_from_facts(after, facts)
        self._record(None, change.address, record)

    def _replace(self, change: Change) -> None:
        before, after = change.before, change.after
        assert before is not None and after is not None
        if before.get("external"):
            self._record(None, change.address, None)
        else:
            self._delete(change)
        if after.get("external"):
            self._register(change)
        else:
            self._create(change)

    def _delete(self, change: Change) -> None:
        before = change.before
        assert before is not None
        provider = self.providers.by_kind(before["provider"], before["backend"])
        seq = self.journal.intent(change.address, Action.DELETE.value, before["id"], None)
        try:
            provider.delete_volume(before["id"], before.get("region"))
        except VolumeNotFound as error:
            # A provider reports a missing volume this way (the local one for an id it can never
            # have, as in a state edited by hand), so there is nothing left to delete.
            log.info("delete of %s (%s): %s", change.address, before["id"], error.detail)
        self._record(seq, change.address, None)

    def _deregister(self, change: Change) -> None:
        self._record(None, change.address, None)
