"""The drift and refresh commands as steps: read the state, refresh it, compare, and maybe write.

`inspect_drift` writes nothing and takes no lock. `refresh_state` holds the state lock, calls
`confirm` and then writes the refreshed facts into the state. Nothing here prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.drift import Drift, ProviderFacts, find_drift, refreshed_state
from engine.recovery import recover_journal
from engine.workflow import Workspace, refresh, refresh_nodes, settle_upgrade
from state.locking import LockInfo
from state.model import State

log = logging.getLogger(__name__)


@dataclass
class DriftReport:
    """The state as read (with any journal folded in) and how it differs from the providers."""

    state: State | None
    drift: list[Drift] = field(default_factory=list)
    # What recovering a journal or upgrading the state did, for people.
    notes: list[str] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return len(self.state.resources) if self.state else 0

    @property
    def drifted_addresses(self) -> list[str]:
        return sorted({item.address for item in self.drift})


@dataclass
class RefreshOutcome:
    report: DriftReport
    state_written: bool = False
    cancelled: bool = False


def inspect_drift(workspace: Workspace) -> DriftReport:
    """Refresh the state in memory and compare it with the providers. Writes nothing."""
    state = workspace.store.read()
    journal = workspace.store.read_journal()
    recovered: list[str] = []
    if journal is not None and not journal.empty:
        state, recovered = recover_journal(state, journal, workspace.providers)
    if state is None:
        return DriftReport(None)

    volumes = refresh(state, workspace.providers)
    nodes = {address: found is not None for address, found in refresh_nodes(state, workspace.providers).items()}
    notes = recovered + settle_upgrade(state, volumes)
    return DriftReport(state, find_drift(state, ProviderFacts(volumes=volumes, nodes=nodes)), notes)


def refresh_state(
    workspace: Workspace,
    *,
    command: str,
    lock_timeout: float,
    confirm: Callable[[DriftReport], bool],
    on_lock: Callable[[LockInfo | None], None] | None = None,
) -> RefreshOutcome:
    """Write the refreshed facts into the state once `confirm` agrees."""
    with workspace.store.lock(command, lock_timeout) as dead_holder:
        if on_lock is not None:
            on_lock(dead_holder)
        report = inspect_drift(workspace)
        outcome = RefreshOutcome(report)
        if report.state is None:
            return outcome

        on_disk = workspace.store.read()
        final = refreshed_state(report.state, report.drift)
        if on_disk is not None and final.same_content(on_disk) and report.state.migration is None:
            return outcome
        if not confirm(report):
            outcome.cancelled = True
            return outcome

        final.serial = (on_disk.serial if on_disk else 0) + 1
        workspace.store.write(final)
        workspace.store.remove_journal()
        log.info("refreshed %d records of %s", len(report.drifted_addresses), workspace.store.describe())
        outcome.state_written = True
        return outcome
