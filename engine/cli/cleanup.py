"""cleanup: delete the managed volumes left unattached for longer than their auto_cleanup_duration."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import click

from engine.cli.common import GlobalOptions, Output, color_enabled, load_project_settings, make_workspace
from engine.cli.planning import ApplyFlags, approval_options, run_apply
from engine.project import Project
from engine.render import render_human, render_json
from engine.workflow import PlanOptions, prepare


@click.command()
@approval_options
@click.option("--dry-run", is_flag=True, help="Show the plan and stop: nothing is deleted and no lock is taken.")
@click.option(
    "--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON on stdout, and nothing else."
)
@click.pass_obj
def cleanup(options: GlobalOptions, /, dry_run: bool, as_json: bool, **flags: Any) -> int:
    """Delete managed volumes unattached for longer than their auto_cleanup_duration.

    volplan has no daemon: run this from a scheduled job (with -y) to do what dstack's
    auto_cleanup_duration does. The idle time comes from the providers; registered and
    protected volumes are never deleted.

    \b
    Example:
      volplan cleanup --dry-run
      volplan cleanup -y
    """
    root = options.directory.absolute()
    project = Project(root, load_project_settings(root), volumes={}, runs={}, files=[])
    now = datetime.now(timezone.utc)
    if as_json and not dry_run:
        raise click.UsageError("--json needs --dry-run: cleanup prints JSON only for a plan it does not apply.")

    if dry_run:
        prepared = prepare(make_workspace(options, project), project, PlanOptions(cleanup_at=now))
        output = Output(color_enabled(options) and not as_json)
        output.echo(render_json(prepared.plan) if as_json else render_human(prepared.plan, output.paint))
        return 0

    apply_flags = ApplyFlags(**flags)
    apply_flags.cleanup_at = now
    return run_apply(options, project, "cleanup", apply_flags)
