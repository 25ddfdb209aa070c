"""plan, apply, destroy and delete: the plan/apply cycle with its prompts and progress."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import click

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
)
from engine.errors import UsageError, VolplanError
from engine.executor import Events, StepResult, StepStatus
from engine.project import Project
from engine.render import destroyed_data, render_human, render_json
from engine.units import format_size
from engine.workflow import ApplyOutcome, PlanOptions, Prepared, apply, plan_only

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


@click.command()
@file_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout, and nothing else.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 for no changes, 2 for changes, 1 for errors.")
@refresh_option
@replace_option
@click.pass_obj
def plan(
    options: GlobalOptions,
    files: tuple[str, ...],
    as_json: bool,
    detailed_exitcode: bool,
    refresh: bool,
    allow_replace: bool,
) -> int:
    """Show what apply would change. Writes nothing.

    \b
    Example:
      volplan plan --detailed-exitcode
    """
    project = load(options, files)
    workspace = make_workspace(options, project)
    prepared = plan_only(workspace, project, PlanOptions(refresh=refresh, allow_replace=allow_replace))
    output = Output(color_enabled(options) and not as_json)

    if prepared.recovered:
        # stdout carries only the JSON document with --json, so the report goes to stderr there.
        output.echo(_recovery_text(prepared.recovered, saved=False), err=as_json)
    if as_json:
        output.echo(render_json(prepared.plan))
    else:
        output.echo(render_human(prepared.plan, output.paint))
    if detailed_exitcode and prepared.plan.actionable:
        return 2
    return 0


def _apply_options(function: Any) -> Any:
    decorators = [
        file_option,
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
        refresh_option,
        replace_option,
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.command(name="apply")
@_apply_options
@click.pass_obj
def apply_command(
    options: GlobalOptions,
    files: tuple[str, ...],
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
    refresh: bool,
    allow_replace: bool,
) -> int:
    """Change the volumes to match the configurations, after showing the plan.

    \b
    Example:
      volplan apply
      volplan apply -f volume.dstack.yml -y
    """
    project = load(options, files)
    return _run_apply(
        options,
        project,
        "apply",
        auto_approve,
        allow_input,
        parallelism,
        lock_timeout,
        PlanOptions(refresh=refresh, allow_replace=allow_replace),
    )


@click.command()
@_apply_options
@click.pass_obj
def destroy(
    options: GlobalOptions,
    files: tuple[str, ...],
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
    refresh: bool,
    allow_replace: bool,
) -> int:
    """Delete every managed volume in the state and deregister every registered one.

    With -f, only the resources of those files. Registered volumes keep their data.

    \b
    Example:
      volplan destroy
      volplan destroy -f volume.dstack.yml -y
    """
    return _run_destroy(options, files, auto_approve, allow_input, parallelism, lock_timeout, refresh, allow_replace)


@click.command()
@_apply_options
@click.pass_obj
def delete(
    options: GlobalOptions,
    files: tuple[str, ...],
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
    refresh: bool,
    allow_replace: bool,
) -> int:
    """Delete the resources of the given files, as dstack's delete -f does.

    \b
    Example:
      volplan delete -f volume.dstack.yml
    """
    if not files:
        raise UsageError(
            "Missing -f FILE",
            "delete needs the configuration files whose resources to delete: volplan delete -f volume.dstack.yml.",
        )
    return _run_destroy(options, files, auto_approve, allow_input, parallelism, lock_timeout, refresh, allow_replace)


def _run_destroy(
    options: GlobalOptions,
    files: tuple[str, ...],
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
    refresh: bool,
    allow_replace: bool,
) -> int:
    loaded = load(options, files) if files else None
    root = options.directory.absolute()
    settings = loaded.settings if loaded else load_project_settings(root)
    selected = loaded.files if loaded else None
    project = Project(root, settings, volumes={}, runs={}, files=selected or [], selected_files=selected)
    return _run_apply(
        options,
        project,
        "destroy",
        auto_approve,
        allow_input,
        parallelism,
        lock_timeout,
        PlanOptions(refresh=refresh, allow_replace=allow_replace),
        dstack_style=bool(files),
    )


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


def _run_apply(
    options: GlobalOptions,
    project: Project,
    command: str,
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
    plan_options: PlanOptions,
    dstack_style: bool | None = None,
) -> int:
    workspace = make_workspace(options, project)
    output = Output(color_enabled(options))
    dstack_style = bool(project.selected_files) if dstack_style is None else dstack_style
    interrupts = _Interrupts()

    def report_recovery(prepared: Prepared) -> None:
        if prepared.recovered:
            output.echo(_recovery_text(prepared.recovered, saved=True))

    def confirm(prepared: Prepared) -> bool:
        output.echo(render_human(prepared.plan, output.paint))
        output.echo()
        if not auto_approve:
            _require_terminal(allow_input, command)
            if not _ask(prepared, output, dstack_style, command):
                return False
        interrupts.executing = True
        return True

    def on_lock(stale: object) -> None:
        if stale is not None:
            output.echo(f"Note: the previous holder of the state lock died ({stale.describe()}); continuing.", err=True)  # type: ignore[attr-defined]

    started = time.monotonic()
    try:
        with _handling(interrupts):
            outcome = apply(
                workspace,
                project,
                plan_options,
                command=f"volplan {command}",
                lock_timeout=lock_timeout,
                parallelism=parallelism,
                confirm=confirm,
                events=_Progress(output),
                stop=interrupts.stop,
                on_lock=on_lock,
                on_prepared=report_recovery,
            )
    except _StoppedBeforeSteps as stopped:
        output.echo(f"\n{stopped}: stopped before any step started; no volume was changed.", err=True)
        return _exit_code(stopped.number)
    return _finish(outcome, output, interrupts.received, time.monotonic() - started, dstack_style)


def _require_terminal(allow_input: bool, command: str) -> None:
    if not allow_input:
        raise UsageError(
            "Approval needed",
            f"{command} was run with --input=false; add --auto-approve (or -y) to {command} without a prompt.",
        )
    if not sys.stdin.isatty():
        raise UsageError(
            "Approval needed",
            f"standard input is not a terminal, so volplan cannot ask; add --auto-approve (or -y) to {command} without a prompt.",
        )


def _ask(prepared: Prepared, output: Output, dstack_style: bool, command: str) -> bool:
    plan = prepared.plan
    doomed = destroyed_data(plan)
    if doomed:
        output.echo(output.paint("These volumes and all their data will be destroyed:", "delete"))
        for change in doomed:
            before = change.before or {}
            size = f", {format_size(before['size_gb'])}" if before.get("size_gb") else ""
            output.echo(f"  - {change.address} ({before.get('id')}{size})")
        output.echo()

    if dstack_style:
        return click.confirm(
            _dstack_question(plan.actionable), default=None, show_default=False, prompt_suffix=" [y/n]: "
        )

    output.echo(
        f"Do you want to perform these actions?\n  volplan will {command} as described above.\n  Only 'yes' will be accepted to approve.\n"
    )
    answer: str = click.prompt("  Enter a value", default="", show_default=False)
    return answer.strip() == "yes"


def _dstack_question(changes: list[Change]) -> str:
    if len(changes) > 1:
        return f"{summary_line_text(changes)} Proceed?"
    change = changes[0]
    name = (change.after or change.before or {}).get("name", change.address)
    questions = {
        Action.CREATE: f"Volume {name} does not exist yet. Create the volume?",
        Action.REGISTER: f"Volume {name} is not registered yet. Register the volume?",
        Action.UPDATE: f"Volume {name} changes: {change.reason}. Update the volume?",
        Action.REPLACE: f"Volume {name} must be replaced: {change.reason}. Replace the volume?",
        Action.DELETE: f"Delete the volume {name}?",
        Action.DEREGISTER: f"Deregister the volume {name}? Its data is kept.",
    }
    return questions[change.action]


def summary_line_text(changes: list[Change]) -> str:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action.value] = counts.get(change.action.value, 0) + 1
    return (
        "This will "
        + ", ".join(f"{action} {count} volume{'s' if count > 1 else ''}" for action, count in counts.items())
        + "."
    )


def _finish(outcome: ApplyOutcome, output: Output, received: list[int], elapsed: float, dstack_style: bool) -> int:
    plan = outcome.prepared.plan
    if not plan.actionable:
        output.echo(render_human(plan, output.paint))
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
    for line in outcome.adopted:
        output.echo(f"Note: {line}")
    if received:
        name = signal.Signals(received[0]).name
        output.echo(
            output.paint(f"Apply interrupted by {name}.", "warning")
            + f" {len(succeeded)} succeeded, {len(failed)} failed, {len(skipped)} not started or skipped."
        )
        for result in failed:
            output.echo(f"  failed:  {result.change.address}: {_describe_failure(result.error)}")
        output.echo("What succeeded is in the state; run apply again to finish.")
    elif report.ok:
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
        return _exit_code(received[0])
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
