"""plan, apply, destroy and delete: the plan/apply cycle with its prompts and progress."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from engine.cli.common import (
    GlobalOptions,
    Output,
    color_enabled,
    describe_failure,
    file_option,
    load,
    load_project_settings,
    make_workspace,
    parse_duration_option,
    refresh_option,
    replace_option,
    require_terminal,
    target_options,
    terraform_plan_options,
)
from engine.cli.prompts import ask
from engine.cli.tables import render_table, volume_rows
from engine.errors import UsageError
from engine.executor import StepResult, StepStatus
from engine.overrides import in_scope, override_name, select_name
from engine.planfile import SavedPlan, read_plan_file, write_plan_file
from engine.project import Project
from engine.render import (
    applied_counts,
    render_human,
    render_json,
)
from engine.render_markdown import render_markdown
from engine.run_planner import RunScope
from engine.workflow import ApplyOutcome, PlanOptions, Prepared, apply, apply_saved, plan_only

if TYPE_CHECKING:
    from engine.cli.progress import ApplyProgress

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
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["human", "json", "markdown"]),
    default=None,
    help="human (the default), json (same as --json) or markdown (a pull-request comment, under 60,000 characters).",
)
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
@terraform_plan_options
@click.pass_obj
def plan(
    options: GlobalOptions,
    files: tuple[str, ...],
    name: str | None,
    output_format: str | None,
    as_json: bool,
    detailed_exitcode: bool,
    out: Path | None,
    refresh: bool,
    allow_replace: bool,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    replace: tuple[str, ...],
    allow_input: bool,
    lock_timeout: float,
    parallelism: int,
) -> int:
    """Show what apply would change. Writes nothing, unless --out saves the plan.

    \b
    Example:
      volplan plan --detailed-exitcode
      volplan plan --out release.plan && volplan apply release.plan
      volplan plan --format markdown > plan.md
    """
    chosen = _output_format(output_format, as_json)
    project = _load_named(options, files, name)
    workspace = make_workspace(options, project)
    plan_options = PlanOptions(
        refresh=refresh, allow_replace=allow_replace, targets=targets, excludes=excludes, replace=replace
    )
    prepared = plan_only(workspace, project, plan_options)
    output = Output(color_enabled(options) and chosen == "human")

    if prepared.recovered:
        # stdout carries only the plan document with --json or --format, so the report goes to stderr there.
        output.echo(_recovery_text(prepared.recovered, saved=False), err=chosen != "human")
    if chosen == "json":
        output.echo(render_json(prepared.plan))
    elif chosen == "markdown":
        output.echo(render_markdown(prepared.plan, prepared.drift).rstrip("\n"))
    else:
        output.echo(render_human(prepared.plan, output.paint, prepared.drift))
    if out is not None:
        write_plan_file(out, SavedPlan.bind(prepared.plan, prepared.read_state))
        if chosen == "human":
            output.echo(f"\nSaved the plan to {out}. To apply exactly this plan, run: volplan apply {out}")
    if detailed_exitcode and prepared.plan.actionable:
        return 2
    return 0


def _output_format(output_format: str | None, as_json: bool) -> str:
    if as_json and output_format not in (None, "json"):
        raise UsageError(
            "Conflicting output formats",
            f"--json and --format {output_format} ask for different formats. Give only one: "
            f"--format {output_format}, or --json (the same as --format json).",
        )
    return "json" if as_json else output_format or "human"


@dataclass
class ApplyFlags:
    """The options that apply, destroy, delete and volume delete share."""

    auto_approve: bool = False
    allow_input: bool = True
    parallelism: int = 10
    lock_timeout: float = 0.0
    refresh: bool = True
    allow_replace: bool = False
    # Set by volplan stop and start: only these runs change.
    run_scope: RunScope = field(default_factory=RunScope)
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
            run_scope=self.run_scope,
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
            metavar="DURATION",
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

    With PLANFILE, execute the plan that plan --out saved, without asking. It is rejected if a
    resource that it reads or changes moved since the plan was made.

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


def _recovery_text(recovered: list[str], *, saved: bool) -> str:
    if saved:
        heading = "Recovered from an interrupted apply (saved before any new change):"
    else:
        heading = "An interrupted apply left work behind; this plan includes it (plan writes nothing, apply saves it):"
    return "\n".join([heading, *(f"  - {line}" for line in recovered)]) + "\n"


class _StoppedBeforeSteps(BaseException):
    """A signal arrived before any step started, so there is nothing to finish."""

    def __init__(self, number: int) -> None:
        super().__init__(signal.Signals(number).name)
        self.number = number


@dataclass
class _Interrupts:
    """Signals received during an apply, and whether its steps have started."""

    stop: threading.Event = field(default_factory=threading.Event)
    received: list[int] = field(default_factory=list)
    executing: bool = False

    def handle(self, number: int, frame: FrameType | None) -> None:
        """First SIGINT or SIGTERM: start no new steps. A second one abandons the steps in flight.

        The handler runs in the main thread, which may hold the output lock, so it writes to
        the file descriptor directly.
        """
        name = signal.Signals(number).name
        if not self.executing:
            raise _StoppedBeforeSteps(number)
        if self.received:
            _write_stderr(
                f"\n{name} received again: abandoning the steps in flight. The journal records them; "
                "the next plan or apply recovers them.\n"
            )
            os._exit(_exit_code(number))
        self.received.append(number)
        self.stop.set()
        _write_stderr(
            f"\n{name} received: finishing the steps in flight, starting no new ones. "
            "Press Ctrl-C again to abandon them (the journal keeps what they did).\n"
        )


def _write_stderr(text: str) -> None:
    # RuntimeError: the main thread was writing to stdout; its partial line is lost, the journal is not.
    with contextlib.suppress(OSError, RuntimeError):
        sys.stdout.flush()
    os.write(sys.stderr.fileno(), text.encode())


def _exit_code(number: int) -> int:
    return EXIT_SIGTERM if number == signal.SIGTERM else EXIT_SIGINT


@contextmanager
def _handling(interrupts: _Interrupts) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, interrupts.handle) for number in (signal.SIGINT, signal.SIGTERM)}
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
    interrupts = _Interrupts()
    progress = _apply_progress(options)

    def report_recovery(prepared: Prepared) -> None:
        if prepared.recovered:
            output.echo(_recovery_text(prepared.recovered, saved=True))

    def confirm(prepared: Prepared) -> bool:
        output.echo(render_human(prepared.plan, output.paint, prepared.drift))
        output.echo()
        progress.expect(len(prepared.plan.actionable))
        if not flags.auto_approve:
            require_terminal(flags.allow_input, command)
            if not ask(prepared.plan, output, dstack_style, command):
                return False
        interrupts.executing = True
        return True

    try:
        with _handling(interrupts), progress:
            outcome = apply(
                workspace,
                project,
                flags.plan_options(destroy=destroy),
                command=f"volplan {command}",
                lock_timeout=flags.lock_timeout,
                parallelism=flags.parallelism,
                confirm=confirm,
                events=progress,
                stop=interrupts.stop,
                on_lock=_lock_note(output),
                on_prepared=report_recovery,
            )
    except _StoppedBeforeSteps as stopped:
        output.echo(f"\n{stopped}: stopped before any step started; no volume was changed.", err=True)
        return _exit_code(stopped.number)
    code = _finish(outcome, output, interrupts.received, progress.elapsed, dstack_style, command)
    if show_table and code == 0:
        output.echo()
        output.echo(render_table(volume_rows(workspace, lambda record: in_scope(project, record))))
    return code


def _run_saved(options: GlobalOptions, path: Path, flags: ApplyFlags) -> int:
    """Apply a saved plan: no question, because the plan that was reviewed is the question."""
    saved = read_plan_file(path)
    workspace = make_workspace(options, _settings_only(options))
    output = Output(color_enabled(options))
    # A saved plan is applied without a question, so its steps may start at once.
    interrupts = _Interrupts(executing=True)
    progress = _apply_progress(options)
    progress.expect(len(saved.plan.actionable))
    with _handling(interrupts), progress:
        outcome = apply_saved(
            workspace,
            saved,
            command="volplan apply",
            lock_timeout=flags.lock_timeout,
            parallelism=flags.parallelism,
            events=progress,
            stop=interrupts.stop,
            on_lock=_lock_note(output),
        )
    return _finish(outcome, output, interrupts.received, progress.elapsed, dstack_style=False, command="apply")


def _apply_progress(options: GlobalOptions) -> ApplyProgress:
    # Imported here: rich takes about 15 ms to load, and only apply shows progress.
    from engine.cli.progress import ApplyProgress

    return ApplyProgress.for_options(options)


def _lock_note(output: Output) -> Callable[[object], None]:
    def on_lock(stale: object) -> None:
        if stale is not None:
            output.echo(f"Note: the previous holder of the state lock died ({stale.describe()}); continuing.", err=True)  # type: ignore[attr-defined]

    return on_lock


def _finish(
    outcome: ApplyOutcome, output: Output, received: list[int], elapsed: float, dstack_style: bool, command: str
) -> int:
    plan = outcome.prepared.plan
    if not plan.actionable:
        output.echo(render_human(plan, output.paint, outcome.prepared.drift))
        output.echo("\nApply complete: nothing to change.")
        return 0
    if outcome.cancelled:
        output.echo(f"{command.capitalize()} cancelled: nothing was changed.", err=True)
        return 1

    report = outcome.report
    assert report is not None
    succeeded = report.with_status(StepStatus.SUCCEEDED)
    failed = report.with_status(StepStatus.FAILED)
    skipped = report.with_status(StepStatus.SKIPPED) + report.with_status(StepStatus.NOT_STARTED)

    output.echo()
    for line in outcome.adopted:
        output.echo(f"Note: {line}")
    if received:
        name = signal.Signals(received[0]).name
        output.echo(
            output.paint(f"Apply interrupted by {name}.", "warning")
            + f" {len(succeeded)} succeeded, {len(failed)} failed, {len(skipped)} not started or skipped."
        )
        for result in failed:
            output.echo(f"  failed:  {result.change.address}: {describe_failure(result.error)}")
        output.echo("What succeeded is in the state; run apply again to finish.")
    elif report.ok:
        output.echo(output.paint("Apply complete!", "create") + " " + _counts_text(succeeded) + f" in {elapsed:.1f}s.")
    else:
        output.echo(
            output.paint("Apply finished with errors.", "error")
            + f" {len(succeeded)} succeeded, {len(failed)} failed, {len(skipped)} skipped or not started."
        )
        for result in failed:
            output.echo(f"  failed:  {result.change.address}: {describe_failure(result.error)}")
        for result in skipped:
            why = f"depends on {result.skipped_because}" if result.skipped_because else "not started"
            output.echo(f"  skipped: {result.change.address} ({why})")
        output.echo("What succeeded is in the state; run apply again to finish.")
    if outcome.state_written:
        output.echo("State saved.")

    if received:
        return _exit_code(received[0])
    return 0 if report.ok else 1


def _counts_text(results: list[StepResult]) -> str:
    return applied_counts([result.change for result in results])
