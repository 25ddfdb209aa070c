"""stop and start: stop a run's nodes now and keep it stopped, or start it again."""

from __future__ import annotations

import click

from engine.cli.common import GlobalOptions, load
from engine.cli.planning import ApplyFlags, approval_options, run_apply
from engine.run_planner import RunScope


def _run_address(name: str) -> str:
    return name if name.startswith("run.") else f"run.{name}"


@click.command()
@click.argument("run_name", metavar="RUN")
@click.option("--abort", is_flag=True, help="Force every detach at once instead of waiting for stop_duration.")
@approval_options
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
@approval_options
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
