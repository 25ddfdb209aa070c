"""drift and refresh: report what changed outside volplan, and record it in the state."""

from __future__ import annotations

import click

from engine.cli.common import (
    GlobalOptions,
    Output,
    color_enabled,
    load_project_settings,
    make_workspace,
    parse_duration_option,
    require_terminal,
)
from engine.project import Project
from engine.refresh import DriftReport, inspect_drift, refresh_state
from engine.render_drift import drift_lines, render_drift_json
from engine.workflow import Workspace
from state.locking import LockInfo

EXIT_DRIFT = 2


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the drift as JSON on stdout, and nothing else.")
@click.pass_obj
def drift(options: GlobalOptions, as_json: bool) -> int:
    """Report what changed outside volplan. Writes nothing.

    Exits 0 when the providers match the state, 2 when something drifted, 1 on errors.

    \b
    Example:
      volplan drift --json
    """
    workspace = _workspace(options)
    report = inspect_drift(workspace)
    output = Output(color_enabled(options) and not as_json)

    if as_json:
        output.echo(render_drift_json(report.drift, report.checked))
    else:
        _print_report(report, workspace, output)
        if report.drift:
            output.echo()
            output.echo(
                "Run 'volplan refresh' to record deletions, sizes and tags in the state, or 'volplan apply' to change the "
                "volumes back to their configurations."
            )
    return EXIT_DRIFT if report.drift else 0


@click.command()
@click.option("-y", "--yes", "--auto-approve", "auto_approve", is_flag=True, help="Write without asking for approval.")
@click.option(
    "--input",
    "allow_input",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    help="Ask for approval on the terminal; --input=false fails instead of asking.",
)
@click.option(
    "--lock-timeout",
    metavar="DURATION",
    callback=parse_duration_option,
    default="0",
    show_default=True,
    help="How long to wait for the state lock (90s, 5m; 0 tries once).",
)
@click.pass_obj
def refresh(options: GlobalOptions, auto_approve: bool, allow_input: bool, lock_timeout: float) -> int:
    """Write what the providers report into the state, after showing the drift.

    Volumes deleted outside volplan leave the state; sizes and tags take the providers' values.
    No volume is changed.

    \b
    Example:
      volplan refresh -y
    """
    workspace = _workspace(options)
    output = Output(color_enabled(options))

    def confirm(report: DriftReport) -> bool:
        _print_report(report, workspace, output)
        output.echo()
        if auto_approve:
            return True
        require_terminal(allow_input, "refresh")
        output.echo(
            "Do you want to write these facts into the state?\n"
            "  volplan will refresh the state as described above; no volume is changed.\n"
            "  Only 'yes' will be accepted to approve.\n"
        )
        answer: str = click.prompt("  Enter a value", default="", show_default=False)
        return answer.strip() == "yes"

    def on_lock(dead_holder: LockInfo | None) -> None:
        if dead_holder is not None:
            output.echo(
                f"Note: the previous holder of the state lock died ({dead_holder.describe()}); continuing.", err=True
            )

    outcome = refresh_state(
        workspace, command="volplan refresh", lock_timeout=lock_timeout, confirm=confirm, on_lock=on_lock
    )
    if outcome.cancelled:
        output.echo("Refresh cancelled: the state was not changed.", err=True)
        return 1
    if outcome.state_written:
        count = len(outcome.report.drifted_addresses)
        output.echo(f"State refreshed: {count} resource{'s' if count != 1 else ''} updated from the providers.")
        return 0
    _print_report(outcome.report, workspace, output)
    if outcome.report.drift:
        output.echo("\nNothing to write: the state cannot record these differences; change them by hand.")
    return 0


def _workspace(options: GlobalOptions) -> Workspace:
    """Make a workspace for commands that read no configurations but use volplan.yml's providers."""
    root = options.directory.absolute()
    settings = load_project_settings(root)
    return make_workspace(options, Project(root, settings, volumes={}, runs={}, files=[]))


def _print_report(report: DriftReport, workspace: Workspace, output: Output) -> None:
    for note in report.notes:
        output.echo(output.paint("Warning: ", "warning") + note)
    if report.notes:
        output.echo()
    if report.state is None:
        output.echo(f"No state at {workspace.store.describe()} yet: nothing to compare.")
        return
    if not report.drift:
        count = report.checked
        output.echo(
            output.paint("No drift.", "bold")
            + f" The {count} {'resource in the state matches' if count == 1 else 'resources in the state match'}"
            + " what the providers report."
        )
        return

    changed = len(report.drifted_addresses)
    output.echo(output.paint("Drift:", "bold") + f" {changed} of {report.checked} resources changed outside volplan.")
    output.echo()
    for line in drift_lines(report.drift, output.paint):
        output.echo(line)
