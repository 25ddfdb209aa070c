"""Commands as sequences of steps: read the state, recover the journal, refresh, plan, apply.

This is where the state, the providers and the planner meet. Nothing here prints: the CLI
passes callbacks for confirmation and progress.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from engine import recovery
from engine.actions import Plan, Record
from engine.collection import paused_collection
from engine.drift import Drift, ProviderFacts, find_drift
from engine.errors import PlanError, VolplanError
from engine.executor import Events, ExecutionReport, execute
from engine.pipeline import plan_changes
from engine.planfile import SavedPlan, stale_reason
from engine.planner import PlanInput, build_graph
from engine.project import Project
from engine.run_planner import RunScope
from engine.steps import StepRunner
from providers.base import Capabilities, NodeFacts, VolumeFacts
from providers.registry import ProviderSet
from state.journal import Intent, JournalContents, fold_results
from state.migrations import STATE_VERSION, decide_external
from state.model import State
from state.storage import JournalWriter, StateStore, StateWriteError

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    """The project folder, the state store and the providers that a command works with."""

    root: Path
    store: StateStore
    providers: ProviderSet


@dataclass
class PlanOptions:
    refresh: bool = True
    allow_replace: bool = False
    destroy: bool = False
    run_scope: RunScope = field(default_factory=RunScope)
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    # Set by cleanup: plan the deletion of volumes idle for longer than their
    # auto_cleanup_duration at this time, instead of diffing the configurations.
    cleanup_at: datetime | None = None


@dataclass
class Prepared:
    """Everything a plan was made from."""

    state: State | None
    plan: Plan
    # What recovery found: journal results, adopted volumes, provider leftovers. For people.
    recovered: list[str] = field(default_factory=list)
    journal: JournalContents | None = None
    drift: list[Drift] = field(default_factory=list)
    # The state as read from disk, before the journal or the upgrade changed anything. A saved
    # plan is bound to these records because apply FILE compares them with the file it reads.
    read_state: State | None = None

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The plan's dependency graph, built on first use: a plan without changes needs none."""
        return build_graph(self.plan)


@dataclass
class ApplyOutcome:
    prepared: Prepared
    report: ExecutionReport | None = None
    state_written: bool = False
    cancelled: bool = False
    errored_state_path: Path | None = None
    # Volumes that failed creates made after all, found by their tokens and recorded. For people.
    adopted: list[str] = field(default_factory=list)


def prepare(workspace: Workspace, project: Project, options: PlanOptions) -> Prepared:
    """Read the state (with any journal folded in), refresh it and make the plan. Writes nothing."""
    with paused_collection():
        return _prepare(workspace, project, options)


def _prepare(workspace: Workspace, project: Project, options: PlanOptions) -> Prepared:
    state = workspace.store.read()
    # Settling an upgrade changes records in place; folding a journal makes a copy.
    read_state = state.copy() if state is not None and state.migration is not None else state
    journal = workspace.store.read_journal()
    recovered: list[str] = []
    if journal is not None and not journal.empty:
        state, recovered = recovery.recover_journal(state, journal, workspace.providers)

    facts = refresh(state, workspace.providers) if options.refresh and state else {}
    upgrade_notes = settle_upgrade(state, facts) if state else []
    node_facts = refresh_nodes(state, workspace.providers) if options.refresh and state else {}
    source = PlanInput(
        project=project,
        prior=state,
        facts=facts,
        registered=look_up_registrations(project, state, workspace.providers),
        provider_kind=workspace.providers.kind_for,
        allow_replace=options.allow_replace,
        destroy=options.destroy,
        provider_header=_provider_header(project, state, workspace.providers),
        node_facts=node_facts,
        capabilities=_capabilities(workspace.providers),
        run_scope=options.run_scope,
        targets=options.targets,
        excludes=options.excludes,
        replace=options.replace,
        cleanup_at=options.cleanup_at,
    )
    plan = plan_changes(source)
    plan.warnings[:0] = upgrade_notes
    node_presence = {address: found is not None for address, found in node_facts.items()}
    drift = find_drift(state, ProviderFacts(volumes=facts, nodes=node_presence)) if state else []
    return Prepared(state, plan, recovered, journal, drift, read_state)


def refresh(state: State, providers: ProviderSet) -> dict[str, VolumeFacts | None]:
    """Ask each provider about all of its volumes at once. Missing volumes map to None."""
    ids_by_kind: dict[str, dict[str, str]] = {}
    for address, record in state.resources.items():
        if record.get("kind") == "volume" and record.get("id"):
            ids_by_kind.setdefault(record["provider"], {})[record["id"]] = address

    facts: dict[str, VolumeFacts | None] = {}
    for kind, addresses in sorted(ids_by_kind.items()):
        regions = {volume_id: state.resources[address].get("region") for volume_id, address in addresses.items()}
        # One call per provider kind; the backend only picks the settings the provider is made with.
        first = next(iter(addresses.values()))
        provider = providers.by_kind(kind, state.resources[first].get("backend"))
        found = provider.refresh_volumes(list(addresses), regions)
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


def refresh_nodes(state: State, providers: ProviderSet) -> dict[str, NodeFacts | None]:
    """Ask each provider about all of its run nodes (and their mounts) at once."""
    ids_by_kind: dict[tuple[str, str], dict[str, str]] = {}
    regions: dict[str, str | None] = {}
    for address, record in state.resources.items():
        if record.get("kind") == "node" and record.get("id"):
            key = (record["provider"], record["backend"])
            ids_by_kind.setdefault(key, {})[record["id"]] = address
            regions[record["id"]] = record.get("region")

    facts: dict[str, NodeFacts | None] = {}
    for (kind, backend), addresses in sorted(ids_by_kind.items()):
        found = providers.by_kind(kind, backend).refresh_nodes(list(addresses), regions)
        for node_id, address in addresses.items():
            facts[address] = found.get(node_id)
    return facts


def _capabilities(providers: ProviderSet) -> Callable[[str], Capabilities]:
    def capabilities(backend: str) -> Capabilities:
        return providers.for_backend(backend).capabilities(backend)

    return capabilities


def look_up_registrations(
    project: Project, state: State | None, providers: ProviderSet
) -> dict[str, VolumeFacts | None]:
    """Check, in one call per provider, that every volume_id about to be registered exists."""
    known = state.resources if state else {}
    ids_by_backend: dict[str, dict[str, str | None]] = {}
    for address, volume in project.volumes.items():
        volume_id = volume.config.volume_id or volume.config.claim_name
        if volume_id and address not in known:
            ids_by_backend.setdefault(volume.config.backend, {})[volume_id] = volume.config.region

    found: dict[str, VolumeFacts | None] = {}
    for backend, ids in sorted(ids_by_backend.items()):
        reported = providers.for_backend(backend).refresh_volumes(sorted(ids), ids)
        found.update({volume_id: reported.get(volume_id) for volume_id in ids})
    return found


def _provider_header(project: Project, state: State | None, providers: ProviderSet) -> list[str]:
    backends = {volume.config.backend for volume in project.volumes.values()}
    if state:
        backends |= {r["backend"] for r in state.resources.values() if isinstance(r.get("backend"), str)}
    embedded = sorted(b for b in backends if not providers.configured(b))
    if not embedded:
        return []
    local = providers.by_kind("local")
    return [f"No provider configured for {', '.join(embedded)}: served by {local.describe()}."]


def plan_only(workspace: Workspace, project: Project, options: PlanOptions) -> Prepared:
    """Prepare a plan for `volplan plan`: also report provider leftovers, which only apply removes."""
    prepared = prepare(workspace, project, options)
    in_use = recovery.providers_in_use(prepared.state, project, workspace.providers)
    prepared.recovered.extend(recovery.find_leftovers(in_use))
    return prepared


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
    on_prepared: Callable[[Prepared], None] | None = None,
) -> ApplyOutcome:
    """Plan and, once `confirm` agrees, execute the plan and save the state.

    What recovery found is saved and reported through `on_prepared` before `confirm` is asked.
    """
    with workspace.store.lock(command, lock_timeout) as stale_holder:
        if on_lock is not None:
            on_lock(stale_holder)
        prepared = prepare(workspace, project, options)
        _finish_recovery(workspace, project, prepared)
        if on_prepared is not None:
            on_prepared(prepared)
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
    """Execute a saved plan as it is, once the records it depends on are as they were."""
    with workspace.store.lock(command, lock_timeout) as stale_holder:
        if on_lock is not None:
            on_lock(stale_holder)
        state = workspace.store.read()
        journal = workspace.store.read_journal()
        reason = stale_reason(saved.binding, state, journal is not None and not journal.empty)
        if reason is not None:
            raise PlanError(
                "Saved plan is stale",
                f"{reason}. A saved plan runs only while the resources it reads or changes are as they were "
                "when it was made: run volplan plan --out again, review it, and apply the new file.",
            )

        prepared = Prepared(state, saved.plan)
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
    # Built before the first write: a saved plan's edges may form a cycle, which raises PlanError.
    graph = prepared.graph
    state = prepared.state
    if state is None:
        # The lineage is durable before the first provider call.
        state = State.new()
        state.serial = 1
        _write_before_steps(workspace, state)
        outcome.state_written = True

    journal = _open_journal(workspace, state.lineage)
    runner = StepRunner(workspace.providers, journal, state.lineage, events)
    try:
        outcome.report = execute(
            graph, prepared.plan.actionable, runner, parallelism=parallelism, events=events, stop=stop
        )
        unresolved = _adopt_failed_creates(workspace, journal, runner, outcome)
    finally:
        journal.close()
    _save(workspace, state, runner.results, outcome)
    _settle_journal(workspace, state.lineage, unresolved)
    return outcome


def _write_before_steps(workspace: Workspace, state: State) -> None:
    try:
        workspace.store.write(state)
    except OSError as error:
        raise VolplanError(
            "Failed to save the state",
            f"writing {workspace.store.describe()} failed ({error.strerror}) before any change was made. "
            "Fix the cause (permissions, free space), then run the command again.",
        ) from None


def _open_journal(workspace: Workspace, lineage: str) -> JournalWriter:
    try:
        return workspace.store.open_journal(lineage)
    except OSError as error:
        raise VolplanError(
            "Failed to open the journal",
            f"opening {workspace.store.describe_journal()} failed ({error.strerror}) before any change was made. "
            "Fix the cause (permissions, free space), then run the command again.",
        ) from None


def _adopt_failed_creates(
    workspace: Workspace, journal: JournalWriter, runner: StepRunner, outcome: ApplyOutcome
) -> list[Intent]:
    """Record the volumes that failed creates made after all; return the intents still unknown.

    A create can fail after its volume exists (a timeout, a full disk while writing the journal),
    so each intent without a result is looked up by its token before the journal goes.
    """
    open_intents = journal.open_intents()
    creates = [intent for intent in open_intents if intent.action == "create"]
    if not creates:
        return []
    try:
        adoptions = recovery.find_created(creates, workspace.providers)
    except VolplanError as error:
        log.warning("could not look up %d failed creates by token: %s", len(creates), error)
        return creates

    unresolved = []
    for adoption in adoptions:
        if adoption.facts is None:
            unresolved.append(adoption.intent)
            continue
        runner.adopt(adoption.intent, adoption.facts)
        outcome.adopted.append(
            f"{adoption.intent.address}: the failed create made {adoption.facts.id} after all; it is recorded"
        )
    return unresolved


def _save(workspace: Workspace, state: State, results: list[tuple[str, Record | None]], outcome: ApplyOutcome) -> None:
    final = fold_results(state, results)
    if final.same_content(state):
        return
    final.serial = state.serial + 1
    try:
        workspace.store.write(final)
    except OSError as error:
        # The journal stays, so the next command recovers these results even if this copy is lost.
        raise _save_failed(workspace, final, error, outcome) from None
    except StateWriteError as error:
        outcome.errored_state_path = workspace.store.write_errored(final)
        raise StateWriteError(
            error.title,
            f"{error.detail}\nThe new state, with every change this apply made, was saved to "
            f"{outcome.errored_state_path}. Compare it with the stored state, then put it in place with "
            f"'volplan state push {outcome.errored_state_path}'.",
        ) from None
    outcome.state_written = True


def _save_failed(workspace: Workspace, final: State, error: OSError, outcome: ApplyOutcome) -> VolplanError:
    journal = workspace.store.describe_journal()
    try:
        outcome.errored_state_path = workspace.store.write_errored(final)
    except OSError as second:
        return VolplanError(
            "Failed to save the state",
            f"writing {workspace.store.describe()} failed ({error.strerror}), and so did saving a copy "
            f"({second.strerror}). Nothing is lost: the journal {journal} records every change this apply "
            "made. Fix the cause, then run 'volplan plan' to see them recovered.",
        )
    return VolplanError(
        "Failed to save the state",
        f"writing {workspace.store.describe()} failed ({error.strerror}); the new state was saved to "
        f"{outcome.errored_state_path}. Fix the cause, then move that file to {workspace.store.describe()}. "
        f"Until then, the journal {journal} keeps every change, and the next command recovers them.",
    )


def _settle_journal(workspace: Workspace, lineage: str, unresolved: list[Intent]) -> None:
    """Once the state holds every result, drop the journal or keep only what is still unknown."""
    if unresolved:
        workspace.store.keep_journal_intents(lineage, unresolved)
    else:
        workspace.store.remove_journal()


def _finish_recovery(workspace: Workspace, project: Project, prepared: Prepared) -> None:
    """Save what `prepare` recovered and clear what killed commands left. The caller holds the lock."""
    if prepared.journal is not None:
        _persist_recovery(workspace, prepared)

    temporaries = workspace.store.remove_stale_temporaries()
    if temporaries:
        prepared.recovered.append(f"removed {temporaries} temporary file(s) of interrupted state writes")

    in_use = recovery.providers_in_use(prepared.state, project, workspace.providers)
    prepared.recovered.extend(recovery.remove_leftovers(in_use))


def _persist_recovery(workspace: Workspace, prepared: Prepared) -> None:
    """Write what the journal recovered, so the state never depends on the journal for long."""
    if prepared.state is not None:
        on_disk = workspace.store.read()
        if on_disk is None or not prepared.state.same_content(on_disk):
            prepared.state.serial = (on_disk.serial if on_disk else 0) + 1
            try:
                workspace.store.write(prepared.state)
            except OSError as error:
                raise VolplanError(
                    "Failed to save the recovered state",
                    f"writing {workspace.store.describe()} failed ({error.strerror}). Nothing was changed, and "
                    f"the journal {workspace.store.describe_journal()} still records what the interrupted apply "
                    "did. Fix the cause, then run the command again.",
                ) from None
    workspace.store.remove_journal()
