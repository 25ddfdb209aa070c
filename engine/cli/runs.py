"""stop and start: stop a run's nodes now and keep it stopped, or start it again."""

from __future__ import annotations

import click

from engine.cli.common import GlobalOptions, load, parse_duration_option
from engine.cli.planning import ApplyFlags, run_apply
from engine.run_planner import RunScope

_approval_options = [
    click.option(
        "-y", "--yes", "--auto-approve", "auto_approve", is_flag=True, help="Go ahead without asking for approval."
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


def _with_approval_options(function: click.decorators.FC) -> click.decorators.FC:
    for decorator in reversed(_approval_options):
        function = decorator(function)
    return function


def _run_address(name: str) -> str:
    return name if name.startswith("run.") else f"run.{name}"


@click.command()
@click.argument("run_name", metavar="RUN")
@click.option("--abort", is_flag=True, help="Force every detach at once instead of waiting for stop_duration.")
@_with_approval_options
@click.pass_obj
def stop(
    options: GlobalOptions,
    run_name: str,
    abort: bool,
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
) -> int:
    """Stop a run's nodes now and keep the run stopped.

    Each detach waits up to the run's stop_duration, then is forced. Later applies leave the
    run stopped until 'volplan start RUN' or a change of its file.

    \b
    Example:
      volplan stop train
      volplan stop train --abort -y
    """
    scope = RunScope(stop=frozenset({_run_address(run_name)}), abort=abort)
    project = load(options, ())
    flags = ApplyFlags(
        auto_approve=auto_approve,
        allow_input=allow_input,
        parallelism=parallelism,
        lock_timeout=lock_timeout,
        run_scope=scope,
    )
    return run_apply(options, project, "stop", flags, dstack_style=False)


@click.command()
@click.argument("run_name", metavar="RUN")
@_with_approval_options
@click.pass_obj
def start(
    options: GlobalOptions,
    run_name: str,
    auto_approve: bool,
    allow_input: bool,
    parallelism: int,
    lock_timeout: float,
) -> int:
    """Start a run that 'volplan stop' stopped: its nodes start and its volumes attach.

    \b
    Example:
      volplan start train -y
    """
    scope = RunScope(start=frozenset({_run_address(run_name)}))
    project = load(options, ())
    flags = ApplyFlags(
        auto_approve=auto_approve,
        allow_input=allow_input,
        parallelism=parallelism,
        lock_timeout=lock_timeout,
        run_scope=scope,
    )
    return run_apply(options, project, "start", flags, dstack_style=False)
