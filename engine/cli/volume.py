"""volume list, get and delete: dstack's volume commands, over the volumes in the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.actions import Record
from engine.cli.common import (
    GlobalOptions,
    Output,
    color_enabled,
    load_project_settings,
    make_workspace,
    refresh_option,
)
from engine.cli.planning import ApplyFlags, approval_options, run_apply
from engine.cli.tables import VolumeRow, render_table, volume_rows
from engine.errors import UsageError, VolplanError
from engine.project import Project, load_project
from engine.workflow import Workspace


@click.group(name="volume", invoke_without_command=True)
@click.pass_context
def volume(ctx: click.Context) -> None:
    """List, show and delete the volumes in the state, as dstack's volume commands do.

    \b
    Example:
      volplan volume list -v
      volplan volume get my-volume --json
      volplan volume delete my-volume -y
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_volumes)


@volume.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the volumes as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Add the ID, SIZE, ATTACHED and ERROR columns.")
@refresh_option
@click.pass_obj
def list_volumes(options: GlobalOptions, as_json: bool = False, verbose: bool = False, refresh: bool = True) -> int:
    """List the volumes in the state with their status from the providers.

    \b
    Example:
      volplan volume list -v
      volplan volume list --refresh=false --json
    """
    rows = volume_rows(_workspace(options), refresh_status=refresh)
    if as_json:
        click.echo(json.dumps({"volumes": [row.to_json() for row in rows]}, indent=2))
    else:
        click.echo(render_table(rows, verbose=verbose))
    return 0


@volume.command(name="get")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the volume as JSON.")
@refresh_option
@click.pass_obj
def get_volume(options: GlobalOptions, name: str, as_json: bool, refresh: bool) -> int:
    """Show one volume of the state, by its name.

    NAME is the volume's name, such as data, or its address, such as volume.data.

    \b
    Example:
      volplan volume get data
      volplan volume get data --json
    """
    row = _find(_workspace(options), name, refresh)
    if as_json:
        click.echo(json.dumps(row.to_json(), indent=2))
    else:
        click.echo(render_table([row], verbose=True))
    return 0


@volume.command(name="delete")
@click.argument("name")
@approval_options
@click.pass_obj
def delete_volume(options: GlobalOptions, /, name: str, **flags: Any) -> int:
    """Delete a managed volume, or deregister a registered one.

    A managed volume is deleted with its data. A registered volume (volume_id: in its
    configuration) only leaves the state, and its data is kept.

    \b
    Example:
      volplan volume delete my-volume
      volplan volume delete my-volume -y
    """
    workspace = _workspace(options)
    record = _find(workspace, name, refresh=False).record
    file = str(record.get("file"))
    project = Project(
        workspace.root,
        load_project_settings(workspace.root),
        volumes={},
        runs={},
        files=[file],
        selected_files=[file],
        selected_name=str(record["name"]),
    )

    code = run_apply(options, project, "delete", ApplyFlags(**flags), dstack_style=True, destroy=True)
    if code == 0 and _still_defined(workspace.root, record):
        output = Output(color_enabled(options))
        output.echo(
            output.paint("Note: ", "bold") + f"{file} still defines volume {record['name']}, so the next "
            f"volplan apply creates it again, empty. Remove that file, or delete with volplan delete -f {file}."
        )
    return code


def _workspace(options: GlobalOptions) -> Workspace:
    root = options.directory.absolute()
    return make_workspace(options, Project(root, load_project_settings(root), volumes={}, runs={}, files=[]))


def _find(workspace: Workspace, name: str, refresh: bool) -> VolumeRow:
    address = name if name.startswith("volume.") else f"volume.{name}"
    rows = volume_rows(workspace, lambda record: record.get("address") == address, refresh_status=refresh)
    if not rows:
        raise UsageError(
            "Volume not found",
            f"the state {workspace.store.describe()} has no volume {name}. volplan volume list shows the volumes it has.",
        )
    return rows[0]


def _still_defined(root: Path, record: Record) -> bool:
    """Return whether the volume's own file still declares it, so that a plain apply creates it again."""
    if record.get("name_override"):
        return False
    try:
        project = load_project(root, [str(record.get("file"))])
    except VolplanError:
        return False
    return record["address"] in project.volumes
