"""The `volplan` command line. The only package that prints, prompts and chooses exit codes."""

from __future__ import annotations

import gc
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from engine import __version__
from engine.argv import normalise
from engine.cli.cleanup import cleanup
from engine.cli.common import GlobalOptions, Output, error_text, wants_color
from engine.cli.drift import drift, refresh
from engine.cli.graph import graph
from engine.cli.locks import force_unlock
from engine.cli.planning import EXIT_SIGINT, apply_command, delete, destroy, plan
from engine.cli.runs import start, stop
from engine.cli.show import show
from engine.cli.state_commands import import_command, state
from engine.cli.state_merge import merge_command
from engine.cli.state_sync import pull, push
from engine.cli.validate import validate
from engine.cli.volume import volume
from engine.collection import freeze_after_pauses
from engine.errors import VolplanError
from engine.state_settings import STATE_FILE

# Longer than any command's first sentence, so the command list never cuts one.
_SHORT_HELP_LIMIT = 200


class VolplanGroup(click.Group):
    """Normalises argv and maps every outcome to DESIGN's exit codes (click's usage errors exit 1)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalise(args))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List each command with its whole first sentence; click would cut it to the line's width."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=_SHORT_HELP_LIMIT)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        errors = _error_output(list(args) if args is not None else sys.argv[1:])
        try:
            result = super().main(args=args, prog_name=prog_name or "volplan", standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.UsageError as error:
            hint = f" Run '{error.ctx.command_path} --help' for the options." if error.ctx else ""
            errors.echo(errors.paint("Error: ", "error") + f"{error.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("\nAborted: nothing was changed.", err=True)
            sys.exit(1)
        except click.ClickException as error:
            errors.echo(errors.paint("Error: ", "error") + error.format_message(), err=True)
            sys.exit(1)
        except VolplanError as error:
            errors.echo(error_text(error, errors), err=True)
            sys.exit(getattr(error, "exit_code", 1))
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(EXIT_SIGINT)
        except Exception:
            _report_bug()
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _error_output(args: list[str]) -> Output:
    """Colour for errors on stderr, decided before click parses anything, since parsing may fail."""
    before_double_dash = args[: args.index("--")] if "--" in args else args
    return Output(wants_color("--no-color" not in before_double_dash, sys.stderr))


def _report_bug() -> None:
    descriptor, path = tempfile.mkstemp(prefix="volplan-crash-", suffix=".log")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(f"volplan {__version__}\n{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
    click.echo(
        "Error: volplan hit an internal error (a bug, not a problem with your input).\n\n"
        f"  The details were written to {path}.\n"
        "  Please report it with that file; the state was not changed by this error.",
        err=True,
    )


@click.group(
    cls=VolplanGroup,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    epilog=(
        "Run 'volplan COMMAND --help' for a command's options. Shell completion: "
        'eval "$(_VOLPLAN_COMPLETE=bash_source volplan)" in ~/.bashrc (zsh_source and fish_source for other shells). '
        "Exit codes: 0 success, 1 error, 2 changes (plan --detailed-exitcode)."
    ),
)
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    default=None,
    help="Project folder to work in; FILE arguments are relative to it.  [default: the current folder]",
)
@click.option(
    "--state",
    "state",
    metavar="PATH|s3://BUCKET/KEY",
    default=None,
    help=f"State file or S3 object (default: volplan.yml's state: section, else {STATE_FILE} in the project folder).",
)
@click.option(
    "--provider",
    "providers",
    metavar="BACKEND=KIND",
    multiple=True,
    help="Provider for a backend, such as aws=aws or aws=local; repeatable.  [default: local for every backend]",
)
@click.option(
    "--no-color",
    is_flag=True,
    help="Print without colour or a live progress region (also: NO_COLOR=1; automatic when output is not a terminal).",
)
@click.option(
    "-v", "--verbose", count=True, show_default=False, help="Log what volplan does to stderr (-vv for debug detail)."
)
@click.version_option(__version__, "--version", prog_name="volplan")
@click.pass_context
def cli(
    ctx: click.Context,
    directory: Path | None,
    state: str | None,
    providers: tuple[str, ...],
    no_color: bool,
    verbose: int,
) -> None:
    """Plan and apply dstack volume configurations.

    \b
    Example:
      volplan -C examples/quickstart plan
      volplan -C examples/quickstart apply --auto-approve
    """
    _configure_logging(verbose)
    ctx.obj = GlobalOptions(directory or Path.cwd(), state, list(providers), not no_color)


for command in (
    plan,
    apply_command,
    destroy,
    delete,
    validate,
    volume,
    drift,
    refresh,
    force_unlock,
    stop,
    start,
    graph,
    show,
    state,
    import_command,
    cleanup,
):
    cli.add_command(command)
state.add_command(merge_command)
state.add_command(pull)
state.add_command(push)


def main() -> None:
    # A plan of 10,000 volumes and 2,000 four-node runs keeps about 170,000 objects that the
    # collector tracks (records, parsed files) alive until it ends. With the default thresholds
    # the collector walked them again and again: 0.56 to 0.71 s of that no-op plan. Freezing what the imports
    # made and collecting less often brings it to about 0.12 s; young cycles are still freed.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    freeze_after_pauses()
    cli.main()


def _configure_logging(verbose: int) -> None:
    """Logs are for operators: shown on stderr with -v, otherwise dropped."""
    root = logging.getLogger()
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    elif not root.handlers:
        root.addHandler(logging.NullHandler())
