"""state merge: the git merge driver for volplan state files.

It reads the three files that git passes (%O %A %B), merges them resource by resource
(state/merge.py) and writes the result to OURS (%A) in place. It needs no project folder and
takes no lock: it works on git's temporary copies, never on a live state.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from engine.errors import StateError
from state.merge import Conflict, MergeConflict, merge_states
from state.model import Record, State, parse_state
from state.store import write_file_atomically

_STATE_PATH = click.Path(dir_okay=False, path_type=Path)


@click.command(name="merge")
@click.argument("base", type=_STATE_PATH)
@click.argument("ours", type=_STATE_PATH)
@click.argument("theirs", type=_STATE_PATH)
def merge_command(base: Path, ours: Path, theirs: Path) -> int:
    """Merge two versions of a state file, as a git merge driver.

    BASE is the common ancestor of OURS and THEIRS. Writes the merged state to OURS and exits
    0. When both sides changed the same resource, writes nothing, prints both versions and
    exits 1. An empty BASE means no common ancestor.

    \b
    Example:
      volplan state merge base.state.json volplan.state.json theirs.state.json

    \b
    Set it up as git's merge driver once per clone (see docs/state-merge.md):
      git config merge.volplan-state.driver "volplan state merge %O %A %B"
      echo 'volplan.state.json merge=volplan-state' >> .gitattributes
    """
    ours_state = _read(ours, "ours")
    theirs_state = _read(theirs, "theirs")
    base_state = None if _is_empty(base) else _read(base, "base")

    try:
        merged = merge_states(base_state, ours_state, theirs_state)
    except MergeConflict as conflict:
        click.echo(_conflict_report(conflict), err=True)
        return 1

    write_file_atomically(ours, merged.to_text())
    click.echo(
        f"volplan: merged the state: {len(merged.resources)} resources, serial {merged.serial} "
        f"(ours {ours_state.serial}, theirs {theirs_state.serial}).",
        err=True,
    )
    return 0


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def _read(path: Path, side: str) -> State:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StateError("State file not found", f"{side} ({path}) does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StateError("State file unreadable", f"{side} ({path}): {error}.") from None

    state = parse_state(text, f"{side} ({path})")
    if state.migration is not None:
        # Merging would write the upgraded records without the dated backup that a command
        # keeps before upgrading, and guess the `external` flags that a refresh decides.
        raise StateError(
            "State file needs an upgrade",
            f"{side} ({path}) was written by an older volplan or lacks fields this volplan needs. "
            "Run volplan refresh on each branch and commit the upgraded state, then merge again.",
        )
    return state


def _conflict_report(conflict: MergeConflict) -> str:
    lines = [f"Error: {conflict.title}", "", f"  {conflict.detail}", ""]
    for item in conflict.conflicts:
        lines.extend(_conflict_lines(item))
    return "\n".join(lines)


def _conflict_lines(item: Conflict) -> list[str]:
    lines = [f"{item.address}:"]
    for side, record in (("ours", item.ours), ("theirs", item.theirs)):
        lines.append(f"  {side}:")
        lines.extend("    " + line for line in _record_text(record).splitlines())
    lines.append("")
    return lines


def _record_text(record: Record | None) -> str:
    if record is None:
        return "(no record: removed on this side)"
    return json.dumps(record, indent=2, sort_keys=True)
