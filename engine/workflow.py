"""Commands as sequences of steps: read the state, recover the journal, refresh, plan, apply.

This is where the state, the providers and the planner meet. Nothing here prints: the CLI
passes callbacks for confirmation and progress.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from engine.actions import Plan, Record
from engine.drift import Drift, ProviderFacts, find_drift
from engine.errors import PlanError, StateError, VolplanError
from engine.executor import Events, ExecutionReport, execute
from engine.planfile import SavedPlan, stale_reason
from engine.planner import PlanInput, build_graph, make_plan
from engine.project import Project
from engine.steps import StepRunner, record_from_facts
from providers.base import VolumeFacts
from providers.registry import ProviderSet
from state.journal import JournalContents, fold_results
from state.migrations import STATE_VERSION, decide_external
from state.model import State
from state.storage import StateStore, StateWriteError

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    """Where a command works: the project folder, the state store and the providers."""

    root: Path
    store: StateStore
    providers: ProviderSet


@dataclass
class PlanOptions:
    refresh: bool = True
    allow_replace: bool = False
    destroy: bool = False


@dataclass
class Prepared:
    """Everything a plan was made from."""

    state: State | None
    plan: Plan
    graph: nx.DiGraph
    recovered: list[str] = field(default_factory=list)
    journal: JournalContents | None = None
    drift: list[Drift] = field(default_factory=list)


@dataclass
class ApplyOutcome:
    prepared: Prepared
    report: ExecutionReport | None = None
    state_written: bool = False
    cancelled: bool = False
    errored_state_path: Path | None = None


def prepare(workspace: Workspace, project: Project, options: PlanOptions) -> Prepared:
    """Read the state (with any journal folded in), refresh it and make the plan. Writes nothing."""
    state = workspace.store.read()
    journal = workspace.store.read_journal()
    recovered: list[str] = []
    if journal is not None and not journal.empty:
        state, recovered = recover_journal(state, journal, workspace.providers)

    facts = refresh(state, workspace.providers) if options.refresh and state else {}
    upgrade_notes = settle_upgrade(state, facts) if state else []
    source = PlanInput(
        project=project,
        prior=state,
        facts=facts,
        registered=look_up_registrations(project, state, workspace.providers),
        provider_kind=workspace.providers.kind_for,
        allow_replace=options.allow_replace,
        destroy=options.destroy,
        provider_header=_provider_header(project, state, workspace.providers),
    )
    plan = make_plan(source)
    plan.warnings[:0] = recovered + upgrade_notes
    drift = find_drift(state, ProviderFacts(volumes=facts)) if state else []
    return Prepared(state, plan, build_graph(plan), recovered, journal, drift)


def refresh(state: State, providers: ProviderSet) -> dict[str, VolumeFacts | None]:
    """Ask each provider about all of its volumes at once. Missing volumes map to None."""
    ids_by_kind: dict[str, dict[str, str]] = {}
    for address, record in state.resources.items():
        if record.get("kind") == "volume" and record.get("id"):
            ids_by_kind.setdefault(record["provider"], {})[record["id"]] = address

    facts: dict[str, VolumeFacts | None] = {}
    for kind, addresses in sorted(ids_by_kind.items()):
        found = providers.by_kind(kind, _first_backend(state, addresses.values())).refresh_volumes(list(addresses))
        for volume_id, address in addresses.items():
            facts[address] = found.get(volume_id)
    return facts


def settle_upgrade(state: State, facts: Mapping[str, VolumeFacts | None]) -> list[str]:
    """Decide what upgrading the state left undecided, from the refresh; return notes for people."""
    migration = state.migration
    if migration is None:
        return []
    creators = {address: found.lineage for address, found in facts.items() if found is not None}
    notes = [
        f"the state file (version {migration.from_version}) was upgraded in memory; 'volplan refresh', or the next "
        f"apply that changes something, writes it at version {STATE_VERSION}, after keeping the file as read in a dated backup"
    ]
    notes.extend(migration.filled)
    notes.extend(decide_external(state.resources, migration.undecided_external, state.lineage, creators))
    return notes


def look_up_registrations(
    project: Project, state: State | None, providers: ProviderSet
) -> dict[str, VolumeFacts | None]:
    """Check, in one call per provider, that every volume_id about to be registered exists."""
    known = state.resources if state else {}
    ids_by_backend: dict[str, set[str]] = {}
    for address, volume in project.volumes.items():
        volume_id = volume.config.volume_id or volume.config.claim_name
        if volume_id and address not in known:
            ids_by_backend.setdefault(volume.config.backend, set()).add(volume_id)

    found: dict[str, VolumeFacts | None] = {}
    for backend, ids in sorted(ids_by_backend.items()):
        reported = providers.for_backend(backend).refresh_volumes(sorted(ids))
        found.update({volume_id: reported.get(volume_id) for volume_id in ids})
    return found


def _first_backend(state: State, addresses: object) -> str | None:
    for address in addresses:  # type: ignore[attr-defined]
        backend: str | None = state.resources[address].get("backend")
        return backend
    return None


def recover_journal(state: State | None, journal: JournalContents, providers: ProviderSet) -> tuple[State, list[str]]:
    """Fold the results of an interrupted apply into the state, and adopt what its pending
    creates made, found by their idempotency tokens."""
    if state is None:
        if journal.lineage is None:
            raise StateError("Damaged journal", "the journal has no lineage and there is no state file beside it.")
        state = State(lineage=journal.lineage)
    elif journal.lineage is not None and journal.lineage != state.lineage:
        raise StateError(
            "Journal from another state",
            f"the journal belongs to lineage {journal.lineage}, the state to {state.lineage}. "
            "Move the journal away if it came from another project.",
        )

    state = fold_results(state, journal.results)
    messages = [f"recovered {len(journal.results)} finished steps of an interrupted apply"] if journal.results else []
    messages.extend(_adopt_pending(state, journal, providers))
    return state, messages


def _adopt_pending(state: State, journal: JournalContents, providers: ProviderSet) -> list[str]:
    messages = []
    creates = [intent for intent in journal.pending if intent.action == "create" and intent.record]
    by_kind: dict[str, list[str]] = {}
    for intent in creates:
        assert intent.record is not None
        by_kind.setdefault(intent.record["provider"], []).append(intent.token)
    found: dict[str, VolumeFacts] = {}
    for kind, tokens in by_kind.items():
        found.update(providers.by_kind(kind).find_volumes_by_token(tokens))

    for intent in creates:
        assert intent.record is not None
        facts = found.get(intent.token)
        if facts is None:
            messages.append(f"{intent.address}: an interrupted create made no volume; it will be planned again")
            continue
        state.resources[intent.address] = record_from_facts(intent.record, facts)
        messages.append(f"{intent.address}: adopted volume {facts.id}, made by an interrupted create")
    for intent in journal.pending:
        if intent.action != "create":
            messages.append(f"{intent.address}: an interrupted {intent.action} is checked again by this refresh")
    return messages


def _provider_header(project: Project, state: State | None, providers: ProviderSet) -> list[str]:
    backends = {volume.config.backend for volume in project.volumes.values()}
    if state:
        backends |= {r["backend"] for r in state.resources.values() if isinstance(r.get("backend"), str)}
    embedded = sorted(b for b in backends if not providers.configured(b))
    if not embedded:
        return []
    local = providers.by_kind("local")
    return [f"No provider configured for {', '.join(embedded)}: served by {local.describe()}."]


def apply(
    workspace: Workspace,
    project: Project,
    options: PlanOptions,
    *,
    command: str,
    lock_timeout: float,
    parallelism: int,
    confirm: Callable[[Prepared], bool],
    events: Events | None = None,
    stop: threading.Event | None = None,
    on_lock: Callable[[object], None] | None = None,
) -> ApplyOutcome:
    """Plan and, once `confirm` agrees, execute the plan and save the state."""
    with workspace.store.lock(command, lock_timeout) as stale_holder:
        if on_lock is not None:
            on_lock(stale_holder)
        prepared = prepare(workspace, project, options)
        if prepared.journal is not None:
            _persist_recovery(workspace, prepared)
        outcome = ApplyOutcome(prepared)
        if not prepared.plan.actionable:
            return outcome
        if not confirm(prepared):
            outcome.cancelled = True
            return outcome
        return execute_plan(workspace, prepared, parallelism=parallelism, events=events, stop=stop, outcome=outcome)


def apply_saved(
    workspace: Workspace,
    saved: SavedPlan,
    *,
    command: str,
    lock_timeout: float,
    parallelism: int,
    events: Events | None = None,
    stop: threading.Event | None = None,
    on_lock: Callable[[object], None] | None = None,
) -> ApplyOutcome:
    """Execute a saved plan as it is, once the state is the one it was made from."""
    with workspace.store.lock(command, lock_timeout) as stale_holder:
        if on_lock is not None:
            on_lock(stale_holder)
        state = workspace.store.read()
        journal = workspace.store.read_journal()
        reason = stale_reason(saved.binding, state, journal is not None and not journal.empty)
        if reason is not None:
            raise PlanError(
                "Saved plan is stale",
                f"{reason}. A saved plan runs only against the state it was made from: "
                "run volplan plan --out again, review it, and apply the new file.",
            )

        prepared = Prepared(state, saved.plan, build_graph(saved.plan))
        outcome = ApplyOutcome(prepared)
        if not saved.plan.actionable:
            return outcome
        return execute_plan(workspace, prepared, parallelism=parallelism, events=events, stop=stop, outcome=outcome)


def execute_plan(
    workspace: Workspace,
    prepared: Prepared,
    *,
    parallelism: int,
    events: Events | None,
    stop: threading.Event | None,
    outcome: ApplyOutcome,
) -> ApplyOutcome:
    """Run the plan's steps and fold their results into the state. The caller holds the lock."""
    state = prepared.state
    if state is None:
        # The lineage is durable before the first provider call.
        state = State.new()
        state.serial = 1
        workspace.store.write(state)
        outcome.state_written = True

    journal = workspace.store.open_journal(state.lineage)
    runner = StepRunner(workspace.providers, journal, state.lineage)
    try:
        outcome.report = execute(
            prepared.graph, prepared.plan.actionable, runner, parallelism=parallelism, events=events, stop=stop
        )
    finally:
        journal.close()
    _save(workspace, state, runner.results, outcome)
    return outcome


def _save(workspace: Workspace, state: State, results: list[tuple[str, Record | None]], outcome: ApplyOutcome) -> None:
    final = fold_results(state, results)
    if final.same_content(state):
        workspace.store.remove_journal()
        return
    final.serial = state.serial + 1
    try:
        workspace.store.write(final)
    except OSError as error:
        # The journal stays, so the next command recovers these results even if this copy is lost.
        outcome.errored_state_path = workspace.store.write_errored(final)
        raise VolplanError(
            "Failed to save the state",
            f"writing {workspace.store.describe()} failed ({error.strerror}); the new state was saved to "
            f"{outcome.errored_state_path}. Fix the cause, then move that file to {workspace.store.describe()}.",
        ) from None
    except StateWriteError as error:
        outcome.errored_state_path = workspace.store.write_errored(final)
        raise StateWriteError(
            error.title,
            f"{error.detail}\nThe new state, with every change this apply made, was saved to "
            f"{outcome.errored_state_path}. Compare it with the stored state, then put it in place with "
            f"'volplan state push {outcome.errored_state_path}'.",
        ) from None
    outcome.state_written = True
    workspace.store.remove_journal()


def _persist_recovery(workspace: Workspace, prepared: Prepared) -> None:
    """Write what the journal recovered, so the state never depends on the journal for long."""
    assert prepared.state is not None
    on_disk = workspace.store.read()
    if on_disk is None or not prepared.state.same_content(on_disk):
        prepared.state.serial = (on_disk.serial if on_disk else 0) + 1
        workspace.store.write(prepared.state)
    workspace.store.remove_journal()
