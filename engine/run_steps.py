"""Carry out the changes of runs, nodes and mounts: start, stop, attach and detach.

A run record changes in the state only. A node's start and stop and a mount's attach are
journalled like a volume's create and delete, with an idempotency token for the start. A detach polls the
provider with backoff through the executor's `Poll`, so it occupies no worker while it waits;
after the run's `stop_duration` it forces the detach and warns that a forced detach can
corrupt the file system.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from engine.actions import Action, Change, Record
from engine.errors import ProviderError
from engine.executor import Poll, StepOutcome
from engine.units import format_duration
from providers.base import MountSpec, NodeFacts, NodeSpec, Provider
from providers.registry import ProviderSet
from state.storage import JournalWriter

log = logging.getLogger(__name__)

# Polling a detach: the first retry after this many seconds, doubling up to the maximum.
FIRST_POLL_DELAY = 0.1
MAX_POLL_DELAY = 5.0


class Recorder(Protocol):
    def __call__(self, seq: int | None, address: str, record: Record | None) -> None: ...


def node_record_from_facts(after: Record, facts: NodeFacts) -> Record:
    record = dict(after)
    record["id"] = facts.id
    record["availability_zone"] = facts.availability_zone
    return record


class RunSteps:
    """The step handlers for run, node and mount changes."""

    def __init__(
        self,
        providers: ProviderSet,
        journal: JournalWriter,
        lineage: str,
        record: Recorder,
        latest: Callable[[str], Record | None],
        warn: Callable[[str], None],
        make_token: Callable[[str, str], str],
        waiting: Callable[[Change, str], None] = lambda change, message: None,
    ) -> None:
        self.providers = providers
        self.journal = journal
        self.lineage = lineage
        self._record = record
        self._latest = latest
        self._warn = warn
        self._make_token = make_token
        # Tells the progress display what a step in flight is waiting for.
        self._waiting = waiting

    def __call__(self, change: Change) -> StepOutcome:
        kind = (change.after or change.before or {}).get("kind")
        if kind == "node":
            return self._node(change)
        if kind == "mount":
            return self._mount(change)
        self._record(None, change.address, change.after)
        return None

    def _provider(self, record: Record) -> Provider:
        return self.providers.by_kind(record["provider"], record["backend"])

    # Nodes

    def _node(self, change: Change) -> StepOutcome:
        if change.action is Action.CREATE:
            return self._start(change)
        if change.action is Action.DELETE:
            self._stop(change)
            return None
        self._record(None, change.address, change.after)
        return None

    def _start(self, change: Change) -> str:
        after = change.after
        assert after is not None
        token = self._make_token(change.address, uuid.uuid4().hex)
        seq = self.journal.intent(change.address, Action.CREATE.value, token, after)
        spec = NodeSpec(
            address=change.address,
            run=after["run"],
            rank=after["rank"],
            backend=after["backend"],
            region=after["region"],
            availability_zone=after["availability_zone"],
            lineage=self.lineage,
        )
        facts = self._provider(after).start_node(spec, token)
        self._record(seq, change.address, node_record_from_facts(after, facts))
        return facts.id

    def _stop(self, change: Change) -> None:
        before = change.before
        assert before is not None
        seq = self.journal.intent(change.address, Action.DELETE.value, before["id"], None)
        self._provider(before).stop_node(before["id"], before.get("region"))
        self._record(seq, change.address, None)

    # Mounts

    def _mount(self, change: Change) -> StepOutcome:
        action = change.action
        if action is Action.DELETE:
            assert change.before is not None
            return self._detach(change, change.before, then=lambda: self._finish(change, None))
        if action is Action.REPLACE:
            assert change.before is not None
            return self._detach(change, change.before, then=lambda: self._attach(change))
        if action is Action.CREATE and not (change.after or {}).get("skipped"):
            return self._attach(change)
        self._record(None, change.address, change.after)
        return None

    def _attach(self, change: Change) -> str | None:
        assert change.after is not None
        after = self._resolve_ids(change.after)
        spec = _mount_spec(after)
        # Journalled so that a kill after the attach and before the record still leaves a
        # trace: the next apply finds the mount on the node and adopts it.
        seq = self.journal.intent(
            change.address, Action.CREATE.value, self._make_token(change.address, uuid.uuid4().hex), after
        )
        log.debug("attaching %s to %s at %s", spec.source, spec.node_id, spec.path)
        self._provider(after).attach_volume(spec)
        self._record(seq, change.address, after)
        return spec.volume_id

    def _finish(self, change: Change, record: Record | None) -> None:
        self._record(None, change.address, record)

    def _resolve_ids(self, after: Record) -> Record:
        """Fill in the node and volume ids that steps earlier in this apply produced."""
        record = dict(after)
        node = self._latest(after["node"])
        if node is not None:
            record["node_id"] = node["id"]
        if after["volume_address"]:
            volume = self._latest(after["volume_address"])
            if volume is not None:
                record["volume_id"] = volume["id"]
        if record["node_id"] is None or (after["volume_address"] and record["volume_id"] is None):
            raise ProviderError(
                "Mount has nothing to attach",
                f"{after['address']}: the node or the volume it needs has no id; run apply again.",
            )
        return record

    def _detach(self, change: Change, before: Record, then: Callable[[], object]) -> StepOutcome:
        """Detach, polling with backoff up to stop_duration, then force with a warning."""
        provider = self._provider(before)
        spec = _mount_spec(before)
        stop_duration: int | None = before.get("stop_duration")
        deadline = None if stop_duration is None else time.monotonic() + stop_duration
        self.journal.intent(change.address, Action.DELETE.value, spec.volume_id or spec.path, None)

        def finish() -> StepOutcome:
            outcome = then()
            return outcome if isinstance(outcome, str) else None

        def force(cause: str) -> StepOutcome:
            message = (
                f"{change.address}: {cause}; forcing the detach of {spec.source} from node {spec.node_id}. "
                "A forced detach can corrupt the file system on the volume."
            )
            log.warning("%s", message)
            self._warn(message)
            provider.detach_volume(spec, force=True)
            return finish()

        def attempt(delay: float) -> StepOutcome:
            if provider.detach_volume(spec, force=False):
                return finish()
            if deadline is not None and time.monotonic() >= deadline:
                assert stop_duration is not None
                return force(f"the detach did not finish within stop_duration {format_duration(stop_duration)}")
            wait = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            log.info("detach of %s from %s in progress; next poll in %.1fs", spec.source, spec.node_id, wait)
            self._waiting(change, _detach_wait_message(spec, stop_duration, deadline))
            return Poll(wait, lambda: attempt(min(delay * 2, MAX_POLL_DELAY)))

        if stop_duration == 0 and spec.volume_id is not None:
            return force("stop_duration is 0 (volplan stop --abort)")
        return attempt(FIRST_POLL_DELAY)


def _detach_wait_message(spec: MountSpec, stop_duration: int | None, deadline: float | None) -> str:
    if deadline is None:
        return f"detaching {spec.source}: waiting until it is released (stop_duration off)"
    left = max(0, round(deadline - time.monotonic()))
    return (
        f"detaching {spec.source}: forced in {left}s if not released (stop_duration {format_duration(stop_duration)})"
    )


def _mount_spec(record: Record) -> MountSpec:
    return MountSpec(
        node_id=record["node_id"],
        path=record["path"],
        backend=record["backend"],
        volume_id=record.get("volume_id"),
        instance_path=record.get("instance_path"),
        region=record.get("region"),
    )
