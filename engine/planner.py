"""Compare the desired resources with the refreshed prior state and produce the plan.

Pure: no files, no providers. The refresh results come in as data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from engine.actions import Action, Change, Plan, Record
from engine.errors import PlanError
from engine.overrides import desired_volumes, in_scope
from engine.project import DesiredVolume, Project
from engine.run_planner import RunScope, plan_runs
from engine.units import format_size
from providers.base import Capabilities, NodeFacts, VolumeFacts
from providers.local import local_capabilities
from state.model import State

if TYPE_CHECKING:
    import networkx as nx

# Fields a provider reports; compared after a refresh.
_PROVIDER_FIELDS = ("size_gb", "tags")
# Fields that only the state holds; a difference is recorded without a provider call.
STATE_ONLY_FIELDS = ("file", "auto_cleanup_duration", "name", "name_override")
# Fields that place a volume; a change needs a new volume.
_PLACEMENT_FIELDS = ("backend", "region", "availability_zone")

# Fields whose differences a change lists, in the order it lists them.
_COMPARED_FIELDS = _PROVIDER_FIELDS + STATE_ONLY_FIELDS + _PLACEMENT_FIELDS + ("external", "id")

# Destructive changes first in the execution order, so that a replaced name is free again
# before its new volume is made.
_ACTION_RANK = {
    Action.DELETE: 0,
    Action.DEREGISTER: 1,
    Action.REPLACE: 2,
    Action.UPDATE: 3,
    Action.CREATE: 4,
    Action.REGISTER: 5,
    Action.NO_OP: 6,
}


@dataclass
class PlanInput:
    project: Project
    prior: State | None
    # Facts by address for every prior record that was refreshed; None means the provider no
    # longer has it. Records that were not refreshed are absent.
    facts: Mapping[str, VolumeFacts | None]
    provider_kind: Callable[[str], str]
    # What the providers report for each volume_id that a configuration registers; None
    # means it does not exist. Ids that were not looked up are absent.
    registered: Mapping[str, VolumeFacts | None] = field(default_factory=dict)
    allow_replace: bool = False
    provider_header: list[str] = field(default_factory=list)
    # Set by destroy and delete: every recorded resource in scope is removed, even if a file defines it.
    destroy: bool = False
    # Facts by address for every prior node that was refreshed; None means the provider no
    # longer has it. Nodes that were not refreshed are absent.
    node_facts: Mapping[str, NodeFacts | None] = field(default_factory=dict)
    # What each backend allows, as the provider that serves it reports.
    capabilities: Callable[[str], Capabilities] = local_capabilities
    run_scope: RunScope = field(default_factory=RunScope)
    # Read by engine.pipeline, which selects, renames and checks around make_plan: -target,
    # -exclude and -replace addresses, and the time `cleanup` measures idle periods up to.
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    cleanup_at: datetime | None = None


def desired_volume_record(volume: DesiredVolume, provider_kind: str) -> Record:
    config = volume.config
    record: Record = {
        "address": volume.address,
        "kind": "volume",
        "name": config.name,
        "backend": config.backend,
        "region": config.region,
        "availability_zone": config.availability_zone,
        "size_gb": config.size_gb,
        "tags": dict(config.tags),
        "external": config.external,
        "id": config.volume_id or config.claim_name,
        "auto_cleanup_duration": config.auto_cleanup_duration,
        "file": volume.file,
        "provider": provider_kind,
    }
    if volume.name_override:
        record["name_override"] = volume.name_override
    return record


def refreshed_record(record: Record, facts: VolumeFacts) -> Record:
    """Return the prior record updated with what the provider reports now.

    When the provider reports what the record contains, the record itself is returned: most
    volumes of a plan are unchanged, and copying each costs more than the comparison.
    """
    if _reported_as_recorded(record, facts):
        return record
    updated = dict(record)
    updated["size_gb"] = facts.size_gb
    updated["availability_zone"] = facts.availability_zone
    if not record.get("external"):
        updated["tags"] = dict(facts.tags)
    return updated


def _reported_as_recorded(record: Record, facts: VolumeFacts) -> bool:
    same_size_and_zone = _holds(record, "size_gb", facts.size_gb) and _holds(
        record, "availability_zone", facts.availability_zone
    )
    # A registered volume's record keeps its own tags, so only a managed one compares them.
    return same_size_and_zone and (bool(record.get("external")) or _holds(record, "tags", facts.tags))


def _holds(record: Record, name: str, value: object) -> bool:
    """Return whether `record` has the field `name` set to `value`, with the same type."""
    # The type check keeps 1 and True, or a dict and another mapping, from counting as equal:
    # the copy would write the reported value, and it must be written the same way.
    return name in record and type(record[name]) is type(value) and record[name] == value


def make_plan(source: PlanInput) -> Plan:
    """Diff desired against prior; raise PlanError with every problem found."""
    prior = source.prior.resources if source.prior else {}
    plan = Plan(
        changes=[],
        lineage=source.prior.lineage if source.prior else None,
        serial=source.prior.serial if source.prior else None,
    )
    plan.notes.extend(source.provider_header)
    if not source.project.files and not prior:
        plan.notes.append(
            f"No configuration files and no state in {source.project.root}: volplan reads the *.dstack.yml files "
            "under the project folder. Run it in your project folder, or pass -C DIR."
        )
    errors: list[str] = []
    volumes = desired_volumes(source.project, prior, errors)
    prior_volumes = {address: record for address, record in prior.items() if record.get("kind") == "volume"}

    volume_addresses = set(volumes) | set(prior_volumes)
    if source.run_scope.runs is not None:
        volume_addresses = set()  # volplan stop and start change only their runs
    else:
        _check_registered_ids(volumes, prior_volumes, errors)
    for address in sorted(volume_addresses):
        desired = volumes.get(address)
        record = prior.get(address)
        if desired is None and record is not None and not in_scope(source.project, record):
            continue
        change = _plan_volume(source, desired, record, plan, errors)
        if change is not None:
            plan.changes.append(change)

    plan_runs(source, plan, errors)

    if errors:
        raise PlanError("Cannot plan", "\n".join(errors))
    _order(plan)
    return plan


def _check_registered_ids(
    volumes: Mapping[str, DesiredVolume], prior_volumes: Mapping[str, Record], errors: list[str]
) -> None:
    """Reject registering a volume that the state already records at another address.

    With two addresses, a delete at one would destroy the data that the other still uses. A
    registered record that no configuration defines any more is deregistered by the same plan,
    so taking its volume at the new address is allowed. `prior_volumes` contains the prior
    state's volume records by address.
    """
    recorded = {r["id"]: a for a, r in prior_volumes.items() if r.get("id")}
    # Only volumes with an external id can clash, so only those are sorted.
    registering = sorted((a, v) for a, v in volumes.items() if v.config.external_id)
    for address, desired in registering:
        volume_id = desired.config.external_id
        other = recorded.get(volume_id) if volume_id else None
        if other is None or other == address:
            continue
        if other not in volumes and prior_volumes[other].get("external"):
            continue
        field = "volume_id" if desired.config.volume_id else "claim_name"
        errors.append(
            f"{desired.file}:{desired.line or 1}: {address}: {field} {volume_id} is already recorded as {other}, "
            f"and a volume has one address. To give it the new address, rename {other} with a moved: entry."
        )


def _plan_volume(
    source: PlanInput,
    desired: DesiredVolume | None,
    record: Record | None,
    plan: Plan,
    errors: list[str],
) -> Change | None:
    if record is None:
        assert desired is not None
        after = desired_volume_record(desired, source.provider_kind(desired.config.backend))
        if desired.config.external:
            field = "volume_id" if desired.config.volume_id else "claim_name"
            if after["id"] in source.registered and source.registered[after["id"]] is None:
                errors.append(
                    f"{desired.file}:{desired.line or 1}: {desired.address}: {field} {after['id']} does not exist "
                    f"in the {after['provider']} provider. Check the id, or create the volume first."
                )
                return None
            plan.notes.append(
                f"{desired.address}: volplan never formats a registered volume; {after['id']} must already "
                "carry a file system."
            )
            return Change(
                desired.address,
                Action.REGISTER,
                f"{_source(desired)} registers the existing volume {after['id']}",
                None,
                after,
            )
        return Change(desired.address, Action.CREATE, f"{_source(desired)} defines a new volume", None, after)

    facts = source.facts.get(record["address"], record)  # absent: not refreshed
    vanished = record["address"] in source.facts and facts is None
    current = refreshed_record(record, facts) if isinstance(facts, VolumeFacts) else record

    if desired is None:
        return _plan_removal(
            current, vanished, "destroy was asked for" if source.destroy else "its configuration is gone"
        )
    return _plan_existing(source, desired, current, vanished, plan, errors)


def _source(desired: DesiredVolume) -> str:
    if desired.name_override:
        return f"{desired.file}, applied with -n {desired.name_override},"
    return desired.file


def _plan_removal(record: Record, vanished: bool, why: str) -> Change:
    address = record["address"]
    if record.get("external"):
        return Change(address, Action.DEREGISTER, f"{why}; the volume and its data are kept", record, None)
    if vanished:
        return Change(
            address,
            Action.DELETE,
            f"{why}, and the volume was already deleted outside volplan",
            record,
            None,
        )
    size = f" ({format_size(record['size_gb'])})" if record.get("size_gb") else ""
    return Change(
        address,
        Action.DELETE,
        f"{why}; the volume{size} and its data will be destroyed",
        record,
        None,
        destroys_data=True,
    )


def _plan_existing(
    source: PlanInput,
    desired: DesiredVolume,
    current: Record,
    vanished: bool,
    plan: Plan,
    errors: list[str],
) -> Change | None:
    address = desired.address
    config = desired.config
    kind = source.provider_kind(config.backend)

    if current.get("provider") != kind:
        plan.warnings.append(provider_move_hint(current, kind))
        return Change(
            address,
            Action.NO_OP,
            f"made by the {current.get('provider')} provider, not by the {kind} provider that now serves "
            f"{config.backend}; left alone",
            current,
            current,
        )

    after = desired_volume_record(desired, kind)
    after["id"] = current["id"] if not config.external else after["id"]
    for name in ("availability_zone",):
        if after[name] is None:
            after[name] = current.get(name)
    for name in ("created_at", "volume_type"):
        if name in current:
            after[name] = current[name]

    if vanished:
        if config.external:
            errors.append(
                f"{desired.file}: {address}: the registered volume {current['id']} no longer exists. "
                "Fix volume_id:, or remove the file to deregister it."
            )
            return None
        after["id"] = None
        plan.warnings.append(
            f"{address}: volume {current['id']} was deleted outside volplan; it will be created again, empty: its data is gone."
        )
        return Change(address, Action.CREATE, f"volume {current['id']} no longer exists", current, after)

    replace = _replacement_reason(current, after) or _forced_replacement(source, address)
    if replace:
        return _plan_replace(source, desired, current, after, replace, errors)
    if config.external:
        return _plan_external_update(current, after)
    return _plan_managed_update(desired, current, after, errors)


def provider_move_hint(record: Record, kind: str) -> str:
    """Explain why a volume made by another provider is left alone, and how to keep or move it."""
    address, backend, made_by = record["address"], record["backend"], record.get("provider")
    delete = f"volplan delete -f {record.get('file')}"
    if record.get("name_override"):
        delete += f" -n {record['name_override']}"
    if record.get("external"):
        move = (
            f"deregister it with {delete} (the data is kept), then register the volume that the {kind} "
            "provider has with volume_id:"
        )
    else:
        move = (
            f"copy its data elsewhere, delete it with {delete} (the {made_by} provider deletes it), then "
            f"apply again: the {kind} provider creates a new, empty volume"
        )
    return (
        f"{address} ({record.get('id')}) was made by the {made_by} provider, but backend {backend} is now served "
        f"by the {kind} provider. volplan never hands a volume to another provider, so it is left alone. "
        f"To keep managing it, select its provider again with --provider {backend}={made_by} (or kind: "
        f"{made_by} for {backend} under providers: in volplan.yml). To move it to the {kind} provider, {move}."
    )


def _replacement_reason(current: Record, after: Record) -> str:
    if bool(current.get("external")) != bool(after["external"]):
        return "it changes between registered and managed"
    if after["external"] and current.get("id") != after["id"]:
        return f"volume_id changes from {current.get('id')} to {after['id']}"
    for name in _PLACEMENT_FIELDS:
        if after.get(name) is not None and current.get(name) != after[name]:
            return f"{name} changes from {current.get(name)} to {after[name]}, which needs a new volume"
    return ""


def _forced_replacement(source: PlanInput, address: str) -> str:
    return f"--replace {address} forces a new volume" if address in source.replace else ""


def _plan_replace(
    source: PlanInput, desired: DesiredVolume, current: Record, after: Record, reason: str, errors: list[str]
) -> Change | None:
    destroys = not current.get("external")
    if not desired.config.external:
        after["id"] = None
        if not desired.config.availability_zone:
            after["availability_zone"] = None
    if destroys and not source.allow_replace:
        errors.append(
            f"{desired.file}: {desired.address}: {reason}; replacing it would destroy volume {current['id']} and its data. "
            "Revert the change, or run again with --allow-replace to replace it."
        )
        return None
    return Change(
        desired.address,
        Action.REPLACE,
        reason,
        current,
        after,
        destroys_data=destroys,
        changed_fields=_changed(current, after),
    )


def _plan_external_update(current: Record, after: Record) -> Change:
    # A registered volume is never modified: its real size and zone are what the provider reports.
    after["size_gb"] = current.get("size_gb")
    after["tags"] = current.get("tags", {})
    changed = _changed(current, after)
    if not changed:
        return Change(after["address"], Action.NO_OP, "matches the configuration", current, after)
    return Change(
        after["address"],
        Action.UPDATE,
        "configuration details changed (state only)",
        current,
        after,
        changed_fields=changed,
    )


def _plan_managed_update(desired: DesiredVolume, current: Record, after: Record, errors: list[str]) -> Change | None:
    size_now = current.get("size_gb") or 0
    if after["size_gb"] is not None and after["size_gb"] < size_now:
        where = f"{desired.file}:{desired.size_line}" if desired.size_line else desired.file
        errors.append(
            f"{where}: {desired.address}: size {format_size(after['size_gb'])} is smaller than the volume's "
            f"{format_size(size_now)}; volumes only grow, and a smaller one would need a new volume without "
            f"its data. Set size: {format_size(size_now)} or more."
        )
        return None

    changed = _changed(current, after)
    if not changed:
        return Change(desired.address, Action.NO_OP, "matches the configuration", current, after)
    reasons = []
    if "size_gb" in changed:
        reasons.append(f"size grows from {format_size(size_now)} to {format_size(after['size_gb'])}")
    if "tags" in changed:
        reasons.append("tags changed")
    reasons.extend(f"{name} changed" for name in changed if name in STATE_ONLY_FIELDS)
    return Change(desired.address, Action.UPDATE, "; ".join(reasons), current, after, changed_fields=changed)


def _changed(before: Record, after: Record) -> tuple[str, ...]:
    # Equal records, the usual case, compare in C without a lookup per field.
    if before == after:
        return ()
    return tuple(name for name in _COMPARED_FIELDS if before.get(name) != after.get(name))


def build_graph(plan: Plan) -> nx.DiGraph:
    """Build the dependency graph of the plan's actionable changes; raise PlanError on a cycle."""
    # Imported here: loading networkx takes about 60 ms, and a plan without changes never needs it.
    import networkx as nx

    graph: nx.DiGraph = nx.DiGraph()
    for change in plan.actionable:
        graph.add_node(change.address, change=change)
    graph.add_edges_from(plan.edges)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    path = " -> ".join(edge[0] for edge in cycle) + f" -> {cycle[0][0]}"
    raise PlanError("Dependency cycle", f"the plan cannot be ordered: {path}.")


def _order(plan: Plan) -> None:
    """Sort changes into a stable execution order that respects every edge."""
    no_ops = sorted((c for c in plan.changes if not c.action.is_change), key=lambda c: c.address)
    if len(no_ops) == len(plan.changes) and not plan.edges:
        plan.changes = no_ops
        return
    import networkx as nx

    graph = build_graph(plan)
    by_address = {change.address: change for change in plan.changes}
    rank = {c.address: f"{_ACTION_RANK[c.action]}:{c.address}" for c in plan.changes}
    ordered = list(nx.lexicographical_topological_sort(graph, key=lambda address: rank[address]))
    plan.changes = [by_address[address] for address in ordered] + no_ops
