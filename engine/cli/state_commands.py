"""state list, show, rm and mv, and import: Terraform's state commands over volplan's state.

None of them calls a provider to change anything. `state rm` removes a volume from the state
and leaves the volume and its data at the provider. `import` only reads the volume it takes
under management.
"""

from __future__ import annotations

import json
from typing import Any

import click

from engine.actions import Record
from engine.cli.common import (
    GlobalOptions,
    Output,
    color_enabled,
    load,
    load_project_settings,
    make_workspace,
    parse_duration_option,
    require_terminal,
)
from engine.errors import UsageError
from engine.project import Project
from engine.render import describe_record
from engine.state_edit import (
    ImportPreview,
    edit_state,
    import_volume,
    matching,
    move,
    preview_import,
    read_state,
    remove,
)
from engine.units import format_duration, format_size
from engine.workflow import Workspace
from state.locking import LockInfo

lock_timeout_option = click.option(
    "--lock-timeout",
    metavar="DURATION",
    callback=parse_duration_option,
    default="0",
    show_default=True,
    help="How long to wait for the state lock (90s, 5m; 0 tries once).",
)


@click.group(name="state")
def state() -> None:
    """Inspect and edit the state: its resources, and the state file itself.

    list, show, rm and mv work on the recorded resources and change no volume. merge is git's
    merge driver for state files. pull and push copy the whole state between its store and a
    local file.

    \b
    Example:
      volplan state list
      volplan state show volume.data
      volplan state mv volume.data volume.dataset
      volplan state rm volume.scratch
    """


@state.command(name="list")
@click.argument("addresses", nargs=-1, metavar="[ADDR]...")
@click.pass_obj
def list_resources(options: GlobalOptions, addresses: tuple[str, ...]) -> int:
    """Print the addresses recorded in the state, one a line.

    With ADDR, print only that address and those under it, such as run.train for the run's
    nodes and mounts.

    \b
    Example:
      volplan state list
      volplan state list run.train
    """
    recorded = read_state(_workspace(options))
    selected = (
        sorted({a for pattern in addresses for a in matching(recorded, pattern)})
        if addresses
        else sorted(recorded.resources)
    )
    for address in selected:
        click.echo(address)
    return 0


@state.command(name="show")
@click.argument("address", metavar="ADDR")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the record as JSON, exactly as the state file contains it."
)
@click.pass_obj
def show(options: GlobalOptions, address: str, as_json: bool) -> int:
    """Print the record of one resource as the state file contains it.

    \b
    Example:
      volplan state show volume.data
      volplan state show volume.data --json
    """
    recorded = read_state(_workspace(options))
    record = recorded.resources.get(address)
    if record is None:
        raise UsageError(
            "Resource not in the state",
            f"the state records no {address}. volplan state list shows the recorded addresses.",
        )
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        click.echo(render_record(record))
    return 0


@state.command(name="rm")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@lock_timeout_option
@click.pass_obj
def remove_resources(options: GlobalOptions, addresses: tuple[str, ...], lock_timeout: float) -> int:
    """Forget resources, leaving their volumes and data at the provider.

    \b
    Example:
      volplan state rm volume.scratch
    """
    output = Output(color_enabled(options))
    removed = edit_state(
        _workspace(options),
        lambda edited: remove(edited, addresses),
        command="volplan state rm",
        lock_timeout=lock_timeout,
        on_lock=_lock_note(output),
    )
    for record in removed:
        output.echo(f"Removed {describe_record(record)}")
    output.echo(f"Successfully removed {len(removed)} resource{'s' if len(removed) != 1 else ''} from the state.")
    for record in removed:
        if record.get("kind") == "volume" and not record.get("external"):
            output.echo(
                f"Volume {record.get('id')} and its data still exist; volplan no longer manages it. "
                f"To manage it again: volplan import {record['address']} {record.get('id')}"
            )
    return 0


@state.command(name="mv")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@lock_timeout_option
@click.pass_obj
def move_resource(options: GlobalOptions, old: str, new: str, lock_timeout: float) -> int:
    """Record a resource, and everything under it, at another address.

    The record keeps its volume and its name; the next plan renames the volume when a
    configuration defines NEW. For renames in a team, prefer a moved: entry in volplan.yml,
    which every copy of the state picks up.

    \b
    Example:
      volplan state mv volume.data volume.dataset
    """
    output = Output(color_enabled(options))
    moves = edit_state(
        _workspace(options),
        lambda edited: move(edited, old, new),
        command="volplan state mv",
        lock_timeout=lock_timeout,
        on_lock=_lock_note(output),
    )
    for source, target in moves:
        output.echo(f"Move {source} to {target}")
    output.echo(f"Successfully moved {len(moves)} resource{'s' if len(moves) != 1 else ''}.")
    return 0


@click.command(name="import")
@click.argument("address", metavar="ADDR")
@click.argument("volume_id", metavar="VOLUME_ID")
@click.option("-y", "--yes", "--auto-approve", "auto_approve", is_flag=True, help="Import without asking for approval.")
@click.option(
    "--input",
    "allow_input",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    help="Ask for approval on the terminal; --input=false fails instead of asking.",
)
@lock_timeout_option
@click.pass_obj
def import_command(
    options: GlobalOptions, address: str, volume_id: str, auto_approve: bool, allow_input: bool, lock_timeout: float
) -> int:
    """Take an existing volume under management at ADDR, which a configuration must define.

    A managed volume is deleted with its data when its configuration goes, by destroy or by
    delete. To use a volume without ever letting volplan delete it, register it instead with
    volume_id: in its configuration.

    \b
    Example:
      volplan import volume.data vol-0123456789abcdef0
    """
    project = load(options, ())
    workspace = make_workspace(options, project)
    output = Output(color_enabled(options))
    preview = preview_import(workspace, project, address, volume_id)
    output.echo(render_import(preview, output))
    output.echo()
    if not auto_approve:
        require_terminal(allow_input, "import")
        output.echo("Do you want to import this volume?\n  Only 'yes' will be accepted to approve.\n")
        answer: str = click.prompt("  Enter a value", default="", show_default=False)
        if answer.strip() != "yes":
            output.echo("Import cancelled: the state was not changed.", err=True)
            return 1

    edit_state(
        workspace,
        lambda edited: import_volume(preview, edited),
        command="volplan import",
        lock_timeout=lock_timeout,
        on_lock=_lock_note(output),
        create=True,
    )
    output.echo(
        output.paint("Import successful!", "create") + f" volplan now manages {address} ({volume_id}). "
        "Run volplan plan to see how the volume differs from its configuration."
    )
    return 0


def render_import(preview: ImportPreview, output: Output) -> str:
    record = preview.record
    file = record.get("file")
    lines = [
        output.paint(f"  # {preview.address} will be imported as a managed volume", "bold"),
        f'  {output.paint("import", "create")} volume "{record["name"]}" {{',
        f'      volume_id = "{record["id"]}"',
        f'      backend   = "{record["backend"]}"',
        f'      region    = "{record["region"]}"',
        f'      size      = "{format_size(record["size_gb"])}"',
        f'      file      = "{file}"',
        "    }",
        "",
        output.paint(
            f"volplan will manage volume {record['id']}: volplan destroy, volplan delete -f {file}, or removing "
            f"{file} and applying, deletes it with its data.",
            "delete",
        ),
        f"To use the volume without ever letting volplan delete it, register it instead: replace size: with "
        f"volume_id: {record['id']} in {file}, then run volplan apply.",
    ]
    lines.extend(output.paint("Warning: ", "warning") + warning for warning in preview.warnings)
    return "\n".join(lines)


def render_record(record: Record) -> str:
    """Format a record as Terraform's state show does: a header, then one `name = value` a line."""
    width = max((len(name) for name in record), default=0)
    lines = [f"# {record['address']}:"]
    for name in sorted(record):
        lines.append(f"{name.ljust(width)} = {_value(name, record[name])}")
    return "\n".join(lines)


def _value(name: str, value: Any) -> str:
    if name == "size_gb" and isinstance(value, int):
        return f"{value} ({format_size(value)})"
    if name == "auto_cleanup_duration" and isinstance(value, int):
        return f"{value} ({format_duration(value)})"
    return json.dumps(value, sort_keys=True)


def _workspace(options: GlobalOptions) -> Workspace:
    root = options.directory.absolute()
    return make_workspace(options, Project(root, load_project_settings(root), volumes={}, runs={}, files=[]))


def _lock_note(output: Output) -> Any:
    def on_lock(dead_holder: LockInfo | None) -> None:
        if dead_holder is not None:
            output.echo(
                f"Note: the previous holder of the state lock died ({dead_holder.describe()}); continuing.", err=True
            )

    return on_lock
