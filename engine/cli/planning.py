"""plan, apply, destroy and delete: the plan/apply cycle with its prompts and progress."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
from click.core import ParameterSource

from engine.actions import Action, Change
from engine.cli.common import (
    GlobalOptions,
    Output,
    color_enabled,
    file_option,
    load,
    load_project_settings,
    make_workspace,
    parse_duration_option,
    refresh_option,
    replace_option,
    require_terminal,
    target_options,
)
from engine.cli.prompts import ask
from engine.cli.tables import render_table, volume_rows
from engine.errors import UsageError, VolplanError
from engine.executor import Events, StepResult, StepStatus
from engine.overrides import in_scope, override_name, select_name
from engine.planfile import SavedPlan, read_plan_file, write_plan_file
from engine.project import Project
from engine.render import render_human, render_json
from engine.workflow import ApplyOutcome, PlanOptions, Prepared, apply, apply_saved, prepare

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


name_option = click.option(
    "-n",
    "--name",
    "name",
    metavar="NAME",
    default=None,
    help="With one -f FILE: the volume's name instead of the configuration's, as dstack apply -n does.",
)


@click.command()
@file_option
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout, and nothing else.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 for no changes, 2 for changes, 1 for errors.")
@click.option(
    "--out",
    "out",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the plan to FILE (mode 0600) for volplan apply FILE.",
)
@refresh_option
@replace_option
@target_options
@click.pass_obj
def plan(
    options: GlobalOptions,
    files: tuple[str, ...],
    name: str | None,
    as_json: bool,
    detailed_exitcode: bool,
    out: Path | None,
    refresh: bool,
    allow_replace: bool,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    replace: tuple[str, ...],
) -> int:
    """Show what apply would change. Writes nothing, unless --out saves the plan.

    \b
    Example:
      volplan plan --detailed-exitcode
      volplan plan --out release.plan && volplan apply release.plan
    """
    project = _load_named(options, files, name)
    workspace = make_workspace(options, project)
    plan_options = PlanOptions(
        refresh=refresh, allow_replace=allow_replace, targets=targets, excludes=excludes, replace=replace
    )
    prepared = prepare(workspace, project, plan_options)
    output = Output(color_enabled(options) and not as_json)

    if as_json:
        output.echo(render_json(prepared.plan))
    else:
        output.echo(render_human(prepared.plan, output.paint, prepared.drift))
    if out is not None:
        write_plan_file(out, SavedPlan(prepared.plan))
        if not as_json:
            output.echo(f"\nSaved the plan to {out}. To apply exactly this plan, run: volplan apply {out}")
    if detailed_exitcode and prepared.plan.actionable:
        return 2
    return 0


@dataclass
class ApplyFlags:
    """The options that apply, destroy, delete and volume delete share."""

    auto_approve: bool = False
    allow_input: bool = True
    parallelism: int = 10
    lock_timeout: float = 0.0
    refresh: bool = True
    allow_replace: bool = False
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    # Set by cleanup, not by an option: see PlanOptions.cleanup_at.
    cleanup_at: datetime | None = None

    def plan_options(self, destroy: bool = False) -> PlanOptions:
        return PlanOptions(
            refresh=self.refresh,
            allow_replace=self.allow_replace,
            destroy=destroy,
            targets=self.targets,
            excludes=self.excludes,
            replace=self.replace,
            cleanup_at=self.cleanup_at,
        )


def approval_options(function: Any) -> Any:
    decorators = [
        click.option(
            "-y", "--yes", "--auto-approve", "auto_approve", is_flag=True, help="Apply without asking for approval."
        ),
        click.option(
            "--input",
            "allow_input",
            type=click.BOOL,
            default=True,
            is_flag=False,
            flag_value=True,
            help="Ask for approval on the terminal; --input=false fails instead of asking.",
        ),
        click.option(
            "--parallelism",
            type=click.IntRange(min=1, max=1000),
            default=10,
            show_default=True,
            help="Maximum number of provider calls at once.",
        ),
        click.option(
            "--lock-timeout",
            callback=parse_duration_option,
            default="0",
            show_default=True,
            help="How long to wait for the state lock (90s, 5m; 0 tries once).",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _apply_options(function: Any) -> Any:
    decorators: list[Callable[[Any], Any]] = [
        file_option,
        name_option,
        approval_options,
        refresh_option,
        replace_option,
        target_options,
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.command(name="apply")
@click.argument("plan_file", metavar="[PLANFILE]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_apply_options
@click.pass_context
def apply_command(
    ctx: click.Context, /, plan_file: Path | None, files: tuple[str, ...], name: str | None, **flags: Any
) -> int:
    """Change the volumes to match the configurations, after showing the plan.

    With PLANFILE, execute the plan that plan --out saved, without asking: it is rejected if
    the state changed since the plan was made.

    \b
    Example:
      volplan apply
      volplan apply -f volume.dstack.yml -y
      volplan apply -f volume.dstack.yml -n data-1
      volplan apply release.plan
    """
    options: GlobalOptions = ctx.obj
    if plan_file is not None:
        _reject_planning_options(ctx, files, name)
        return _run_saved(options, plan_file, ApplyFlags(**flags))
    project = _load_named(options, files, name)
    return run_apply(options, project, "apply", ApplyFlags(**flags), show_table=bool(files))


@click.command()
@_apply_options
@click.pass_obj
def destroy(options: GlobalOptions, /, files: tuple[str, ...], name: str | None, **flags: Any) -> int:
    """Delete every managed volume in the state and deregister every registered one.

    With -f, only the resources of those files; with -f FILE -n NAME, only volume NAME made
    from that file. Registered volumes keep their data.

    \b
    Example:
      volplan destroy
      volplan destroy -f volume.dstack.yml -y
    """
    if flags["replace"]:
        raise UsageError(
            "Invalid option for destroy",
            "destroy deletes volumes and never replaces them, so --replace does not apply. "
            "Use volplan apply --replace ADDR --allow-replace to replace a volume.",
        )
    return _run_destroy(options, files, name, ApplyFlags(**flags))


@click.command()
@_apply_options
@click.pass_obj
def delete(options: GlobalOptions, /, files: tuple[str, ...], name: str | None, **flags: Any) -> int:
    """Delete the resources of the given files, as dstack's delete -f does.

    Every volume the file defines goes, including those applied from it with -n; with -n NAME,
    only volume NAME. Registered volumes are deregistered and keep their data.

    \b
    Example:
      volplan delete -f volume.dstack.yml
      volplan delete -f volume.dstack.yml -n data-1 -y
    """
    if not files:
        raise UsageError(
            "Missing -f FILE",
            "delete needs the configuration files whose resources to delete: volplan delete -f volume.dstack.yml.",
        )
    return _run_destroy(options, files, name, ApplyFlags(**flags))


def _load_named(options: GlobalOptions, files: tuple[str, ...], name: str | None) -> Project:
    project = load(options, files)
    return project if name is None else override_name(project, name)


def _reject_planning_options(ctx: click.Context, files: tuple[str, ...], name: str | None) -> None:
    given = [flag for flag, value in (("-f", files), ("-n", name)) if value]
    for parameter, flag in (
        ("refresh", "--refresh"),
        ("allow_replace", "--allow-replace"),
        ("targets", "--target"),
        ("excludes", "--exclude"),
        ("replace", "--replace"),
    ):
        if ctx.get_parameter_source(parameter) is ParameterSource.COMMANDLINE:
            given.append(flag)
    if given:
        raise UsageError(
            "Options not allowed with a saved plan",
            f"{', '.join(given)} change what is planned, but a saved plan is applied exactly as it was made. "
            "Pass them to volplan plan --out instead.",
        )


def _settings_only(options: GlobalOptions) -> Project:
    """Build a project with no configurations, only the volplan.yml settings that select providers."""
    root = options.directory.absolute()
    return Project(root, load_project_settings(root), volumes={}, runs={}, files=[])


def _run_destroy(options: GlobalOptions, files: tuple[str, ...], name: str | None, flags: ApplyFlags) -> int:
    loaded = load(options, files) if files else None
    root = options.directory.absolute()
    settings = loaded.settings if loaded else load_project_settings(root)
    selected = loaded.files if loaded else None
    project = Project(root, settings, volumes={}, runs={}, files=selected or [], selected_files=selected)
    if name is not None:
        project = select_name(project, name)
    return run_apply(options, project, "destroy", flags, dstack_style=bool(files), destroy=True)


class _Progress(Events):
    """Terraform-style lines as steps start and end."""

    _VERBS = {
        Action.CREATE: ("Creating...", "Creation complete"),
        Action.REGISTER: ("Registering...", "Registration complete"),
        Action.UPDATE: ("Modifying...", "Modifications complete"),
        Action.REPLACE: ("Replacing...", "Replacement complete"),
        Action.DELETE: ("Destroying...", "Destruction complete"),
        Action.DEREGISTER: ("Deregistering...", "Deregistration complete"),
    }

    def __init__(self, output: Output) -> None:
        self.output = output

    def step_started(self, change: Change) -> None:
        self.output.echo(f"{change.address}: {self._VERBS[change.action][0]}")

    def step_finished(self, result: StepResult) -> None:
        change = result.change
        if result.status is StepStatus.SUCCEEDED:
            suffix = f" [id={result.resource_id}]" if result.resource_id else ""
            self.output.echo(f"{change.address}: {self._VERBS[change.action][1]} after {result.elapsed:.0f}s{suffix}")
        elif result.status is StepStatus.FAILED:
            self.output.echo(self.output.paint(f"{change.address}: failed: {_describe_failure(result.error)}", "error"))
        elif result.status is StepStatus.SKIPPED:
            self.output.echo(f"{change.address}: skipped because {result.skipped_because} failed")


def _describe_failure(error: BaseException | None) -> str:
    if isinstance(error, VolplanError):
        return f"{error.title}: {error.detail}" if error.detail else error.title
    return f"internal error ({type(error).__name__}); run with -vv for the traceback"


@contextmanager
def _interrupts(stop: threading.Event, received: list[int], output: Output) -> Iterator[None]:
    """First SIGINT or SIGTERM: start no new steps. A second SIGINT abandons the steps in flight."""

    def handle(number: int, frame: FrameType | None) -> None:
        if received and number == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(number)
        stop.set()
        output.echo(
            f"\n{signal.Signals(number).name} received: finishing the steps in flight, starting no new ones. "
            "Press Ctrl-C again to abandon them (the journal keeps what they did).",
            err=True,
        )

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_apply(
    options: GlobalOptions,
    project: Project,
    command: str,
    flags: ApplyFlags,
    dstack_style: bool | None = None,
    show_table: bool = False,
    destroy: bool = False,
) -> int:
    workspace = make_workspace(options, project)
    output = Output(color_enabled(options))
    dstack_style = bool(project.selected_files) if dstack_style is None else dstack_style
    stop = threading.Event()
    received: list[int] = []

    def confirm(prepared: Prepared) -> bool:
        output.echo(render_human(prepared.plan, output.paint, prepared.drift))
        output.echo()
        if flags.auto_approve:
            return True
        require_terminal(flags.allow_input, command)
        return ask(prepared.plan, output, dstack_style, command)

    started = time.monotonic()
    with _interrupts(stop, received, output):
        outcome = apply(
            workspace,
            project,
            flags.plan_options(destroy=destroy),
            command=f"volplan {command}",
            lock_timeout=flags.lock_timeout,
            parallelism=flags.parallelism,
            confirm=confirm,
            events=_Progress(output),
            stop=stop,
            on_lock=_lock_note(output),
        )
    code = _finish(outcome, output, received, time.monotonic() - started, dstack_style)
    if show_table and code == 0:
        output.echo()
        output.echo(render_table(volume_rows(workspace, lambda record: in_scope(project, record))))
    return code


def _run_saved(options: GlobalOptions, path: Path, flags: ApplyFlags) -> int:
    """Apply a saved plan: no question, because the plan that was reviewed is the question."""
    saved = read_plan_file(path)
    workspace = make_workspace(options, _settings_only(options))
    output = Output(color_enabled(options))
    stop = threading.Event()
    received: list[int] = []

    started = time.monotonic()
    with _interrupts(stop, received, output):
        outcome = apply_saved(
            workspace,
            saved,
            command="volplan apply",
            lock_timeout=flags.lock_timeout,
            parallelism=flags.parallelism,
            events=_Progress(output),
            stop=stop,
            on_lock=_lock_note(output),
        )
    return _finish(outcome, output, received, time.monotonic() - started, dstack_style=False)


def _lock_note(output: Output) -> Callable[[object], None]:
    def on_lock(stale: object) -> None:
        if stale is not None:
            output.echo(f"Note: the previous holder of the state lock died ({stale.describe()}); continuing.", err=True)  # type: ignore[attr-defined]

    return on_lock


def _finish(outcome: ApplyOutcome, output: Output, received: list[int], elapsed: float, dstack_style: bool) -> int:
    plan = outcome.prepared.plan
    if not plan.actionable:
        if not outcome.prepared.recovered:
            output.echo(render_human(plan, output.paint, outcome.prepared.drift))
        output.echo("\nApply complete: nothing to change.")
        return 0
    if outcome.cancelled:
        output.echo("Apply cancelled: nothing was changed.", err=True)
        return 1

    report = outcome.report
    assert report is not None
    succeeded = report.with_status(StepStatus.SUCCEEDED)
    failed = report.with_status(StepStatus.FAILED)
    skipped = report.with_status(StepStatus.SKIPPED) + report.with_status(StepStatus.NOT_STARTED)

    output.echo()
    if report.ok:
        output.echo(output.paint("Apply complete!", "create") + " " + _counts_text(succeeded) + f" in {elapsed:.1f}s.")
    else:
        output.echo(
            output.paint("Apply finished with errors.", "error")
            + f" {len(succeeded)} succeeded, {len(failed)} failed, {len(skipped)} skipped or not started."
        )
        for result in failed:
            output.echo(f"  failed:  {result.change.address}: {_describe_failure(result.error)}")
        for result in skipped:
            why = f"depends on {result.skipped_because}" if result.skipped_because else "not started"
            output.echo(f"  skipped: {result.change.address} ({why})")
        output.echo("What succeeded is in the state; run apply again to finish.")
    if outcome.state_written:
        output.echo("State saved.")

    if received:
        return EXIT_SIGTERM if received[0] == signal.SIGTERM else EXIT_SIGINT
    return 0 if report.ok else 1


def _counts_text(results: list[StepResult]) -> str:
    counts: dict[Action, int] = {}
    for result in results:
        counts[result.change.action] = counts.get(result.change.action, 0) + 1
    words = {
        Action.CREATE: "created",
        Action.REGISTER: "registered",
        Action.UPDATE: "updated",
        Action.REPLACE: "replaced",
        Action.DELETE: "deleted",
        Action.DEREGISTER: "deregistered",
    }
    return "Volumes: " + ", ".join(f"{count} {words[action]}" for action, count in counts.items())
