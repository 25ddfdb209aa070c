"""Plan runs, their nodes and their mounts against the prior state and the refreshed nodes.

Pure, like the volume planner: the refreshed nodes and volumes come in as data. A run is a
state-only record (where it was placed, whether `volplan stop` stopped it); a node's create
and delete start and stop it; a mount's create and delete attach and detach it. An attachment
found on the right node without a record is adopted (`register`, no call), and a record whose
attachment vanished is forgotten (`deregister`, no call) or planned again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.actions import Action, Change, Plan, Record
from engine.placement import NodePlacement, Placement, RunNames, VolumeLocation, place_run, render_run_names
from engine.project import DesiredRun
from engine.run_config import InstanceMount, Mount, NetworkMount
from providers.base import Capabilities, NodeFacts

if TYPE_CHECKING:
    from engine.planner import PlanInput

RUN_KINDS = frozenset({"run", "node", "mount"})
# Volume actions after which the volume a mount names exists with its final id.
_VOLUME_MADE = (Action.CREATE, Action.REGISTER, Action.REPLACE, Action.UPDATE)
_VOLUME_GONE = (Action.DELETE, Action.REPLACE)
_REMOVALS = (Action.DELETE, Action.DEREGISTER)


@dataclass(frozen=True)
class RunScope:
    """The runs that `volplan stop` or `volplan start` targets; empty for plan and apply."""

    stop: frozenset[str] = frozenset()
    start: frozenset[str] = frozenset()
    # Force every detach at once instead of waiting for stop_duration.
    abort: bool = False

    @property
    def runs(self) -> frozenset[str] | None:
        """Return the only runs to plan, or None to plan every run and volume."""
        return (self.stop | self.start) or None


def node_address(run_address: str, index: int) -> str:
    return f"{run_address}.node[{index}]"


def mount_address(node: str, path: str) -> str:
    return f"{node}.mount[{path}]"


def config_digest(run: DesiredRun) -> str:
    """Return a short digest of a run's configuration, to see whether its file changed."""
    text = json.dumps(run.config.body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Context:
    source: PlanInput
    plan: Plan
    prior: Mapping[str, Record]
    errors: list[str]
    # The prior records by kind, then by address, in the state's order: each check reads only
    # the kind it needs instead of scanning every record of the state.
    by_kind: dict[str, dict[str, Record]]
    # source.capabilities, called once per backend.
    capabilities: Callable[[str], Capabilities]
    volume_changes: dict[str, Change] = field(default_factory=dict)
    locations: dict[str, VolumeLocation] = field(default_factory=dict)
    # Names of volumes this plan deletes or replaces -> the volume's address.
    doomed: dict[str, str] = field(default_factory=dict)
    changes: dict[str, Change] = field(default_factory=dict)
    # Mount address -> (node address, volume address) for every network mount still wanted.
    desired_mounts: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Volume address -> {mount address: file} for every mount that configurations still list.
    listed_by: dict[str, dict[str, str]] = field(default_factory=dict)
    # Run address -> the volume names of its mounts, for every run that a configuration
    # defines. Rendered once for both the "volume in use" check and the placement.
    run_names: dict[str, RunNames] = field(default_factory=dict)
    # (kind, parent field) -> parent address -> the prior records under it, sorted by address.
    # Built once per pair, so looking up a run's nodes does not scan the whole state each time.
    children: dict[tuple[str, str], dict[str, list[Record]]] = field(default_factory=dict)

    def add(self, change: Change) -> Change:
        self.changes[change.address] = change
        return change

    def records(self, kind: str, parent_field: str, parent: str) -> Sequence[Record]:
        """Return the prior records of `kind` whose `parent_field` is `parent`, sorted by address."""
        index = self.children.get((kind, parent_field))
        if index is None:
            index = _index_children(self.kind(kind).values(), parent_field)
            self.children[(kind, parent_field)] = index
        return index.get(parent, ())

    def kind(self, kind: str) -> dict[str, Record]:
        """Return the prior records of `kind` by address."""
        return self.by_kind.get(kind, {})

    def volume_id(self, volume_address: str) -> str | None:
        """Return the id a mount will reference, or None when this plan makes the volume."""
        change = self.volume_changes.get(volume_address)
        if change is None:
            record = self.prior.get(volume_address)
            return record.get("id") if record else None
        if change.action in (Action.CREATE, Action.REPLACE) or change.after is None:
            return None
        volume_id: str | None = change.after.get("id")
        return volume_id


def _changed_fields(record: Record, after: Record) -> tuple[str, ...]:
    """Return the names of the fields of `after` whose values differ in `record`, sorted."""
    # The usual no-op case: equal records compare in C, without the tuple per item that the
    # item views' comparison makes.
    if after == record or after.items() <= record.items():
        return ()
    return tuple(name for name in sorted(after) if record.get(name) != after[name])


def _index_children(records: Iterable[Record], parent_field: str) -> dict[str, list[Record]]:
    index: dict[str, list[Record]] = {}
    # One sort of every record, instead of one per parent, leaves each parent's list sorted.
    for record in sorted(records, key=lambda r: str(r["address"])):
        parent = record.get(parent_field)
        if isinstance(parent, str):
            index.setdefault(parent, []).append(record)
    return index


def plan_runs(source: PlanInput, plan: Plan, errors: list[str]) -> None:
    """Add the changes of every run, node and mount to `plan`, with their dependency edges."""
    prior = source.prior.resources if source.prior else {}
    context = _Context(source, plan, prior, errors, _group_by_kind(prior), _once_per_backend(source.capabilities))
    _index_volumes(context)
    scope = source.run_scope
    run_addresses = set(source.project.runs) | set(context.kind("run"))

    for address in sorted(scope.runs or ()):
        if address not in run_addresses:
            errors.append(f"{address}: there is no such run in the project or the state. Check the run's name.")

    for address in sorted(run_addresses):
        desired = source.project.runs.get(address)
        record = prior.get(address)
        _note_listed_volumes(context, desired)
        if scope.runs is not None and address not in scope.runs:
            continue
        if desired is None and record is not None and not source.project.selects(record.get("file")):
            continue
        _plan_run(context, address, desired, record)

    _check_volume_consumers(context)
    _check_single_attach(context)
    _check_outside_holders(context)
    plan.changes.extend(context.changes.values())
    plan.edges.extend(_edges(context))


def _group_by_kind(prior: Mapping[str, Record]) -> dict[str, dict[str, Record]]:
    by_kind: dict[str, dict[str, Record]] = {}
    for address, record in prior.items():
        kind = record.get("kind")
        if isinstance(kind, str):
            by_kind.setdefault(kind, {})[address] = record
    return by_kind


def _once_per_backend(capabilities: Callable[[str], Capabilities]) -> Callable[[str], Capabilities]:
    """Wrap `capabilities` so that it is called once per backend during this plan."""
    found: dict[str, Capabilities] = {}

    def lookup(backend: str) -> Capabilities:
        if backend not in found:
            found[backend] = capabilities(backend)
        return found[backend]

    return lookup


# Volumes


def _index_volumes(context: _Context) -> None:
    """Learn where each volume a mount may name lives, and which volumes this plan deletes."""
    for change in context.plan.changes:
        record = change.after or change.before or {}
        if record.get("kind") != "volume":
            continue
        context.volume_changes[change.address] = change
        if change.action in _VOLUME_GONE:
            context.doomed[str(record["name"])] = change.address
        if change.after is not None:
            context.locations[change.after["name"]] = _location(change.after)

    for address, record in context.kind("volume").items():
        if address not in context.volume_changes:
            context.locations[record["name"]] = _location(record)


def _location(record: Record) -> VolumeLocation:
    return VolumeLocation(
        record["name"], record["address"], record["backend"], record.get("region"), record.get("availability_zone")
    )


def _note_listed_volumes(context: _Context, run: DesiredRun | None) -> None:
    """Render the volume names a run's mounts list, and record them for the "volume in use" check."""
    if run is None:
        return
    run_names = render_run_names(run)
    context.run_names[run.address] = run_names
    # A name that failed to render is missing here; the placement reports it.
    for (index, path), names in run_names.names.items():
        mount = mount_address(node_address(run.address, index), path)
        for name in names:
            context.listed_by.setdefault(f"volume.{name}", {})[mount] = run.file


# Runs


def _plan_run(context: _Context, address: str, desired: DesiredRun | None, record: Record | None) -> None:
    scope = context.source.run_scope
    if desired is None:
        assert record is not None
        _remove_run(context, record, "its configuration is gone")
        return
    if address in scope.stop:
        _stop_run(context, desired, record)
        return

    digest = config_digest(desired)
    stays_stopped = record is not None and record.get("stopped") and record.get("config_digest") == digest
    if record is not None and stays_stopped and address not in scope.start:
        reason = f"stopped by volplan stop; volplan start {desired.address.removeprefix('run.')} starts it again"
        context.add(Change(address, Action.NO_OP, reason, record, record))
        for node in context.records("node", "run", address):
            _remove_node(context, node, "its run was stopped")
        return

    run_names = context.run_names[address]
    placement, problems = place_run(desired, run_names, context.locations, context.capabilities, context.doomed)
    context.errors.extend(problems)
    if placement is None:
        return

    provider = context.source.provider_kind(placement.backend)
    after = _run_record(desired, placement, provider, digest)
    context.add(_run_change(record, after, placement, address in scope.start))

    desired_nodes = {_plan_node(context, desired, placement, node, provider) for node in placement.nodes}
    for node_record in context.records("node", "run", address):
        if node_record["address"] not in desired_nodes:
            _remove_node(context, node_record, f"{desired.file} no longer has this node")


def _run_record(run: DesiredRun, placement: Placement, provider: str, digest: str) -> Record:
    return {
        "address": run.address,
        "kind": "run",
        "name": run.address.removeprefix("run."),
        "type": run.config.type,
        "file": run.file,
        "backend": placement.backend,
        "region": placement.region,
        "provider": provider,
        "stopped": False,
        "config_digest": digest,
    }


def _run_change(record: Record | None, after: Record, placement: Placement, starting: bool) -> Change:
    address = after["address"]
    if record is None:
        return Change(address, Action.CREATE, placement.reason, None, after)
    changed = _changed_fields(record, after)
    if not changed:
        return Change(address, Action.NO_OP, placement.reason, record, after)
    if record.get("stopped"):
        cause = (
            "volplan start starts it again" if starting else "its file changed since volplan stop, so it starts again"
        )
        return Change(address, Action.UPDATE, f"{cause}; {placement.reason}", record, after, changed_fields=changed)
    return Change(
        address, Action.UPDATE, f"{', '.join(changed)} changed (state only)", record, after, changed_fields=changed
    )


def _stop_run(context: _Context, desired: DesiredRun, record: Record | None) -> None:
    if record is None:
        context.errors.append(f"{desired.file}: {desired.address} is not running: it is not in the state yet.")
        return
    after = dict(record, stopped=True, config_digest=config_digest(desired))
    nodes = context.records("node", "run", desired.address)
    if record.get("stopped") and not nodes:
        context.add(Change(desired.address, Action.NO_OP, "already stopped", record, record))
        return
    reason = "volplan stop: later applies leave it stopped until volplan start or a change of its file"
    context.add(Change(desired.address, Action.UPDATE, reason, record, after, changed_fields=("stopped",)))
    for node in nodes:
        _remove_node(context, node, "its run is stopped by volplan stop")


def _remove_run(context: _Context, record: Record, reason: str) -> None:
    context.add(Change(record["address"], Action.DELETE, f"{reason}; the run leaves the state", record, None))
    for node in context.records("node", "run", record["address"]):
        _remove_node(context, node, reason)


# Nodes


def _node_facts(context: _Context, address: str) -> tuple[bool, NodeFacts | None]:
    """Return whether the node was refreshed, and what the provider reported (None: gone)."""
    facts = context.source.node_facts
    return address in facts, facts.get(address)


def _plan_node(context: _Context, run: DesiredRun, placement: Placement, node: NodePlacement, provider: str) -> str:
    address = node_address(run.address, node.slot.index)
    record = context.prior.get(address)
    after: Record = {
        "address": address,
        "kind": "node",
        "run": run.address,
        "rank": node.slot.rank,
        "backend": placement.backend,
        "region": placement.region,
        "availability_zone": node.availability_zone,
        "provider": provider,
        "id": None,
        "file": run.file,
    }
    refreshed, facts = _node_facts(context, address)
    total = len(placement.nodes)  # one per slot of the run

    if record is None:
        change = Change(address, Action.CREATE, f"{run.address} needs node {node.slot.index} of {total}", None, after)
    elif refreshed and facts is None:
        context.plan.warnings.append(
            f"{address}: node {record['id']} was stopped outside volplan; it will be started again."
        )
        change = Change(address, Action.CREATE, f"node {record['id']} no longer exists", record, after)
    else:
        moved = _moved(record, after)
        # NOTE: a running node whose placement changes is rejected, not replaced: replacing it
        # would need its detaches before the stop and its attaches after the new start.
        if moved:
            context.errors.append(
                f"{run.file}: {address}: {moved}, but node {record['id']} runs in {record['backend']}/{record['region']}. "
                f"Stop the run first (volplan stop {run.address[4:]}), then apply to start it in the new place."
            )
            return address
        after["id"] = record["id"]
        after["availability_zone"] = after["availability_zone"] or record.get("availability_zone")
        changed = _changed_fields(record, after)
        if changed:
            change = Change(
                address,
                Action.UPDATE,
                f"{', '.join(changed)} changed (state only)",
                record,
                after,
                changed_fields=changed,
            )
        else:
            change = Change(address, Action.NO_OP, "running as configured", record, after)
    context.add(change)

    started = change.action is Action.CREATE
    desired_paths = set()
    for mount in run.config.mounts:
        desired_paths.add(_plan_mount(context, run, after, node, mount, None if started else facts, started))
    for mount_record in context.records("mount", "node", address):
        if mount_record["address"] not in desired_paths:
            _remove_mount(context, mount_record, f"{run.file} no longer mounts {mount_record['path']}")
    return address


def _moved(record: Record, after: Record) -> str:
    if (record.get("backend"), record.get("region")) != (after["backend"], after["region"]):
        return f"the run is now placed in {after['backend']}/{after['region']}"
    zone = after.get("availability_zone")
    if zone and record.get("availability_zone") and record["availability_zone"] != zone:
        return f"its volumes are now in availability zone {zone}"
    return ""


def _remove_node(context: _Context, record: Record, reason: str) -> None:
    for mount in context.records("mount", "node", record["address"]):
        _remove_mount(context, mount, reason)
    refreshed, facts = _node_facts(context, record["address"])
    if refreshed and facts is None:
        message = (
            f"{reason}; node {record.get('id')} was already stopped outside volplan, so it is dropped without a call"
        )
        context.add(Change(record["address"], Action.DEREGISTER, message, record, None))
        return
    context.add(Change(record["address"], Action.DELETE, reason, record, None))


# Mounts


def _plan_mount(
    context: _Context,
    run: DesiredRun,
    node: Record,
    placement: NodePlacement,
    mount: Mount,
    facts: NodeFacts | None,
    started: bool,
) -> str:
    address = mount_address(node["address"], mount.path)
    record = context.prior.get(address)
    after = _mount_record(context, address, run, node, placement, mount)
    if after["volume_address"]:
        context.desired_mounts[address] = (node["address"], after["volume_address"])

    change = _mount_change(context, address, record, after, facts, started)
    if change.action is Action.CREATE and after["skipped"]:
        context.plan.warnings.append(
            f"{address}: the optional instance mount {after['instance_path']} is skipped: "
            f"{node['backend']} has no instance volumes."
        )
    context.add(change)
    return address


def _mount_record(
    context: _Context, address: str, run: DesiredRun, node: Record, placement: NodePlacement, mount: Mount
) -> Record:
    after: Record = {
        "address": address,
        "kind": "mount",
        "run": run.address,
        "node": node["address"],
        "node_id": node["id"],
        "path": mount.path,
        "volume": None,
        "volume_address": None,
        "volume_id": None,
        "instance_path": None,
        "optional": False,
        "skipped": False,
        "backend": node["backend"],
        "region": node["region"],
        "provider": node["provider"],
        "stop_duration": run.config.stop_duration,
    }
    if isinstance(mount, NetworkMount):
        name = placement.volumes[mount.path]
        after["volume"] = name
        after["volume_address"] = f"volume.{name}"
        after["volume_id"] = context.volume_id(after["volume_address"])
    elif isinstance(mount, InstanceMount):
        after["instance_path"] = mount.instance_path
        after["optional"] = mount.optional
        after["skipped"] = mount.path in placement.skipped
    return after


def _mount_change(
    context: _Context, address: str, record: Record | None, after: Record, facts: NodeFacts | None, started: bool
) -> Change:
    source = after["volume"] or after["instance_path"]
    if after["skipped"]:
        if record is not None and record.get("skipped"):
            return Change(
                address, Action.NO_OP, "skipped: optional, and the backend has no instance volumes", record, after
            )
        return Change(
            address, Action.CREATE, "skipped: optional, and the backend has no instance volumes", record, after
        )
    if started:
        return Change(address, Action.CREATE, f"mounts {source} on the node being started", record, after)

    present = facts is None or _present(facts, after)
    if record is None:
        if facts is not None and present:
            reason = f"{source} is already attached to node {after['node_id']}; adopted without an attach call"
            return Change(address, Action.REGISTER, reason, None, after)
        return Change(address, Action.CREATE, f"mounts {source} at {after['path']}", None, after)

    previous = record.get("volume") or record.get("instance_path")
    if previous != source or (after["volume"] and after["volume_id"] != record.get("volume_id")):
        return Change(address, Action.REPLACE, f"the mount changes from {previous} to {source}", record, after)
    if not present:
        context.plan.warnings.append(f"{address}: {source} was detached outside volplan; it will be attached again.")
        return Change(address, Action.CREATE, f"{source} is no longer attached", record, after)
    changed = _changed_fields(record, after)
    if changed:
        return Change(
            address, Action.UPDATE, f"{', '.join(changed)} changed (state only)", record, after, changed_fields=changed
        )
    return Change(address, Action.NO_OP, f"{source} is mounted at {after['path']}", record, after)


def _present(facts: NodeFacts, record: Record) -> bool:
    found = facts.mounts.get(record["path"])
    if found is None:
        return False
    if record.get("instance_path"):
        return bool(found.instance_path == record["instance_path"])
    return found.volume_id is not None and found.volume_id == record.get("volume_id")


def _remove_mount(context: _Context, record: Record, reason: str) -> None:
    address = record["address"]
    refreshed, facts = _node_facts(context, record["node"])
    if record.get("skipped"):
        context.add(
            Change(address, Action.DEREGISTER, f"{reason}; it was skipped, so nothing is detached", record, None)
        )
        return
    if refreshed and (facts is None or not _present(facts, record)):
        message = f"{reason}; it was already detached outside volplan, so it is dropped without a call"
        context.add(Change(address, Action.DEREGISTER, message, record, None))
        return

    before = dict(record)
    if context.source.run_scope.abort:
        before["stop_duration"] = 0
        reason += "; --abort forces the detach at once"
    context.add(Change(address, Action.DELETE, reason, before, None))


# Rules across runs


def _check_volume_consumers(context: _Context) -> None:
    """Reject deleting a volume that a node still uses, listing every consumer."""
    for address in sorted(set(context.doomed.values())):
        change = context.volume_changes[address]
        consumers = {mount: f"{mount} ({file})" for mount, file in context.listed_by.get(address, {}).items()}
        for record in context.records("mount", "volume_address", address):
            if record["address"] not in consumers and not _releases(context.changes.get(record["address"]), address):
                consumers[record["address"]] = f"{record['address']} (in the state)"
        if not consumers:
            continue
        file = (change.before or change.after or {}).get("file")
        verb = "deleted" if change.action is Action.DELETE else "replaced"
        context.errors.append(
            f"{file}: {address} cannot be {verb} while runs use it. Consumers: {', '.join(sorted(consumers.values()))}. "
            "Remove those mounts, or remove or stop those runs in the same apply."
        )


def _releases(change: Change | None, volume_address: str) -> bool:
    """Return whether `change` detaches its mount from the volume at `volume_address`."""
    if change is None:
        return False
    if change.action in _REMOVALS:
        return True
    return change.action is Action.REPLACE and (change.after or {}).get("volume_address") != volume_address


def _check_single_attach(context: _Context) -> None:
    """Reject two nodes that render to one single-attach volume, before any attach."""
    nodes_by_volume: dict[str, set[str]] = {}
    for node, volume in context.desired_mounts.values():
        nodes_by_volume.setdefault(volume, set()).add(node)
    for record in context.kind("mount").values():
        if record.get("volume_address") and record["address"] not in context.changes:
            nodes_by_volume.setdefault(record["volume_address"], set()).add(record["node"])

    shared = sorted((volume, nodes) for volume, nodes in nodes_by_volume.items() if len(nodes) > 1)
    for volume, nodes in shared:
        location = context.locations.get(volume.removeprefix("volume."))
        if location is None or context.capabilities(location.backend).multi_attach:
            continue
        context.errors.append(
            f"{volume} would be attached to {', '.join(sorted(nodes))}, but on {location.backend} a volume attaches "
            "to one node at a time. Give each node its own volume, as in data-$<< dstack.node_rank >>."
        )


def _check_outside_holders(context: _Context) -> None:
    """Reject attaching a volume that a node outside this state has attached."""
    known = {r.get("id") for r in context.kind("node").values()}
    for change in context.changes.values():
        after = change.after
        if change.action not in (Action.CREATE, Action.REPLACE) or after is None or after.get("kind") != "mount":
            continue
        facts = context.source.facts.get(after["volume_address"] or "")
        if facts is None or context.capabilities(after["backend"]).multi_attach:
            continue
        holders = sorted(holder for holder in facts.attachments if holder not in known)
        if holders:
            context.errors.append(
                f"{change.address}: volume {after['volume']} ({facts.id}) is attached to {', '.join(holders)}, "
                "which this state does not manage. Stop the run that holds it, then plan again."
            )


def _edges(context: _Context) -> list[tuple[str, str]]:
    """Order the changes: make before attach, detach and stop before delete."""
    actionable = {a for a, c in context.changes.items() if c.action.is_change}
    actionable |= {a for a, c in context.volume_changes.items() if c.action.is_change}
    edges: list[tuple[str, str]] = []
    for change in context.changes.values():
        if change.action.is_change:
            edges.extend(_edges_of(context, change))
    return [(first, then) for first, then in edges if first in actionable and then in actionable and first != then]


def _edges_of(context: _Context, change: Change) -> list[tuple[str, str]]:
    record = change.after or change.before or {}
    kind = record.get("kind")
    edges: list[tuple[str, str]] = []
    if kind == "node":
        edges.append((record["run"], change.address) if change.after else (change.address, record["run"]))
        if change.action in _REMOVALS:
            for mount in context.records("mount", "node", change.address):
                volume = context.volume_changes.get(mount.get("volume_address") or "")
                if volume is not None and volume.action in _VOLUME_GONE:
                    edges.append((change.address, volume.address))
        return edges
    if kind != "mount":
        return edges

    after, before = change.after, change.before
    if after is not None and change.action is not Action.UPDATE:
        edges.append((after["node"], change.address))
        volume = context.volume_changes.get(after["volume_address"] or "")
        if volume is not None and volume.action in _VOLUME_MADE:
            edges.append((volume.address, change.address))
    if before is not None and change.action in (*_REMOVALS, Action.REPLACE):
        volume = context.volume_changes.get(before.get("volume_address") or "")
        if volume is not None and volume.action in _VOLUME_GONE:
            edges.append((change.address, volume.address))
        node = context.changes.get(before["node"])
        if node is not None and node.action in _REMOVALS:
            if context.capabilities(before["backend"]).stop_releases_volumes:
                edges.append((node.address, change.address))
            else:
                edges.append((change.address, node.address))
    return edges
