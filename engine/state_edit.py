"""State surgery: `state rm`, `state mv` and `import`, which change the state and never a volume.

Each edit holds the state lock and writes the state atomically, raising the serial by one,
after the backup of the state as first read. An edit is rejected while an interrupted apply's
journal is pending, because its results would later be folded in on top of the edit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from engine.actions import Record
from engine.errors import StateError, UsageError
from engine.planner import desired_volume_record
from engine.project import Project
from engine.steps import record_from_facts
from engine.targeting import check_address, selects
from engine.volume_config import is_volume_name
from engine.workflow import Workspace
from providers.base import VolumeFacts
from state.locking import LockInfo
from state.model import State
from state.records import PENDING_RENAME

log = logging.getLogger(__name__)

Result = TypeVar("Result")


def read_state(workspace: Workspace) -> State:
    """Read the state, raising StateError when there is none."""
    state = workspace.store.read()
    if state is None:
        raise _no_state(workspace)
    return state


def _no_state(workspace: Workspace) -> StateError:
    return StateError(
        "No state",
        f"{workspace.store.describe()} does not exist, so there is nothing to show or change. "
        "Pass -C DIR or --state PATH if the state is elsewhere.",
    )


def edit_state(
    workspace: Workspace,
    edit: Callable[[State], Result],
    *,
    command: str,
    lock_timeout: float,
    on_lock: Callable[[LockInfo | None], None] | None = None,
    create: bool = False,
) -> Result:
    """Apply `edit` to a copy of the state under the lock, then write the copy with the next serial.

    With `create`, a missing state is started empty instead of raising StateError.
    """
    with workspace.store.lock(command, lock_timeout) as dead_holder:
        if on_lock is not None:
            on_lock(dead_holder)
        journal = workspace.store.read_journal()
        if journal is not None and not journal.empty:
            raise StateError(
                "Interrupted apply pending",
                f"{workspace.store.describe_journal()} holds the steps of an interrupted apply. Run volplan refresh "
                "first, which records them in the state, then run this command again.",
            )
        state = workspace.store.read()
        if state is None and create:
            state = State.new()
        if state is None:
            raise _no_state(workspace)
        edited = state.copy()
        result = edit(edited)
        edited.serial = state.serial + 1
        workspace.store.write(edited)
        log.info("%s: wrote state serial %d", command, edited.serial)
        return result


def matching(state: State, address: str) -> list[str]:
    """List the recorded addresses that `address` selects: itself and everything nested under it."""
    return sorted(recorded for recorded in state.resources if selects(address, recorded))


def remove(state: State, addresses: tuple[str, ...]) -> list[Record]:
    """Forget the records at `addresses` and nested under them; return what was removed."""
    removed: list[Record] = []
    for address in addresses:
        check_address(address, "state rm")
        found = matching(state, address)
        if not found:
            raise UsageError(
                "Resource not in the state",
                f"the state records no {address}. volplan state list shows the recorded addresses.",
            )
        removed.extend(state.resources.pop(recorded) for recorded in found)
    return removed


def move(state: State, old: str, new: str) -> list[tuple[str, str]]:
    """Move the record at `old`, and every record nested under it, to `new`; return the moves."""
    check_address(old, "state mv")
    check_address(new, "state mv")
    found = matching(state, old)
    if not found:
        raise UsageError("Resource not in the state", f"the state records no {old}. volplan state list shows them.")
    if old.split(".")[0] != new.split(".")[0] or old.count(".") != new.count("."):
        raise UsageError(
            "Invalid move",
            f"{old} and {new} are different kinds of address; a move keeps the kind (volume.a to volume.b).",
        )
    if new.startswith("volume.") and not is_volume_name(new.removeprefix("volume.")):
        raise UsageError(
            "Invalid move",
            f"{new.removeprefix('volume.')!r} is not a valid volume name. Use 2 to 41 characters: a lowercase "
            "letter first, then lowercase letters, digits or '-'.",
        )
    taken = matching(state, new)
    if taken:
        raise UsageError("Address already in use", f"the state already records {taken[0]}. Remove or move it first.")

    moves = [(address, new + address[len(old) :]) for address in found]
    renamed = dict(moves)
    for source, target in moves:
        record = state.resources.pop(source)
        record["address"] = target
        if record.get("kind") == "volume":
            _mark_pending_rename(record)
        state.resources[target] = record
    _rewrite_references(state, renamed)
    return moves


def _mark_pending_rename(record: Record) -> None:
    """Mark a moved volume whose name at the provider differs from its new address.

    The state check accepts such a record only with the mark. The next apply renames the
    volume and writes the record without it.
    """
    if record["address"] == f"volume.{record.get('name')}":
        record.pop(PENDING_RENAME, None)
    else:
        record[PENDING_RENAME] = True


# Fields of node and mount records that hold the address of another record.
_REFERENCE_FIELDS = ("run", "node", "volume_address")


def _rewrite_references(state: State, renamed: dict[str, str]) -> None:
    """Point every reference to a moved record at its new address."""
    for record in state.resources.values():
        for name in _REFERENCE_FIELDS:
            target = renamed.get(record.get(name))  # type: ignore[arg-type]
            if target is not None:
                record[name] = target


@dataclass
class ImportPreview:
    """The record that `import` will write, and the warnings to show before it does."""

    address: str
    record: Record
    facts: VolumeFacts
    warnings: list[str] = field(default_factory=list)


def preview_import(workspace: Workspace, project: Project, address: str, volume_id: str) -> ImportPreview:
    """Check that `volume_id` can be taken under management at `address`, and build its record."""
    check_address(address, "import")
    volume = project.volumes.get(address)
    if volume is None:
        raise UsageError(
            "No configuration for the import",
            f"no configuration defines {address}. Write its file first (type: volume, name: "
            f"{address.removeprefix('volume.')}, backend, region and size), then import it.",
        )
    config = volume.config
    if config.external:
        raise UsageError(
            "Configuration registers the volume",
            f"{volume.file} sets volume_id:, which registers an external volume: volplan never deletes it. "
            f"volplan apply registers it. To take {volume_id} under management instead, so that it is deleted "
            "with its data when its configuration goes, replace volume_id: with size: and import again.",
        )
    state = workspace.store.read()
    _check_not_recorded(state, address, volume_id)

    kind = workspace.providers.kind_for(config.backend)
    facts = workspace.providers.for_backend(config.backend).read_volume(volume_id)
    _check_placement(volume.file, config.backend, config.region, facts)
    record = record_from_facts(desired_volume_record(volume, kind), facts)
    record["tags"] = dict(facts.tags)
    return ImportPreview(address, record, facts, _import_warnings(volume.file, record, facts, state, config.size_gb))


def _check_not_recorded(state: State | None, address: str, volume_id: str) -> None:
    if state is None:
        return
    if address in state.resources:
        raise UsageError(
            "Resource already managed",
            f"the state already records {address} (volume {state.resources[address].get('id')}). "
            f"To import another volume there, forget this one first with volplan state rm {address}.",
        )
    for recorded, record in sorted(state.resources.items()):
        if record.get("id") == volume_id:
            raise UsageError(
                "Volume already managed",
                f"{recorded} already records volume {volume_id}. Use volplan state mv {recorded} {address} "
                "to give it another address.",
            )


def _check_placement(file: str, backend: str, region: str | None, facts: VolumeFacts) -> None:
    if facts.backend != backend or (region is not None and facts.region != region):
        raise UsageError(
            "Volume is elsewhere",
            f"volume {facts.id} is in backend {facts.backend}, region {facts.region}, but {file} sets backend "
            f"{backend}, region {region}. Change {file} to match the volume, then import again: otherwise the "
            "next apply would replace it, destroying its data.",
        )


def _import_warnings(
    file: str, record: Record, facts: VolumeFacts, state: State | None, size_gb: int | None
) -> list[str]:
    warnings = []
    # Without a state yet, the import starts a new lineage, so any recorded lineage is another state's.
    if facts.lineage and (state is None or facts.lineage != state.lineage):
        warnings.append(
            f"volume {facts.id} was created by another state (lineage {facts.lineage}). If that state still "
            "manages it, both would change and delete it: run volplan state rm there first."
        )
    if size_gb is not None and size_gb < facts.size_gb:
        warnings.append(
            f"{file} sets size {size_gb}GB, but the volume has {facts.size_gb}GB; volumes only grow, so the next "
            f"plan fails until size is {facts.size_gb}GB or more."
        )
    if facts.attachments:
        warnings.append(f"volume {facts.id} is attached to {', '.join(facts.attachments)}.")
    return warnings


def import_volume(preview: ImportPreview, state: State) -> None:
    """Record the previewed volume as managed; check again under the lock that nothing took its place."""
    _check_not_recorded(state, preview.address, preview.facts.id)
    state.resources[preview.address] = preview.record
