"""The `volplan` command line. The only package that prints, prompts and chooses exit codes."""

from __future__ import annotations

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
from engine.cli.common import GlobalOptions, Output, error_text
from engine.cli.drift import drift, refresh
from engine.cli.locks import force_unlock
from engine.cli.planning import EXIT_SIGINT, apply_command, delete, destroy, plan
from engine.cli.state_sync import state_group
from engine.cli.validate import validate
from engine.cli.volume import volume
from engine.errors import VolplanError
from engine.state_settings import STATE_FILE


class VolplanGroup(click.Group):
    """Normalises argv and maps every outcome to DESIGN's exit codes (click's usage errors exit 1)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalise(args))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args=args, prog_name=prog_name or "volplan", standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.UsageError as error:
            hint = f" Run '{error.ctx.command_path} --help' for the options." if error.ctx else ""
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("\nAborted: nothing was changed.", err=True)
            sys.exit(1)
        except click.ClickException as error:
            click.echo(f"Error: {error.format_message()}", err=True)
            sys.exit(1)
        except VolplanError as error:
            click.echo(error_text(error, Output(color=False)), err=True)
            sys.exit(getattr(error, "exit_code", 1))
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(EXIT_SIGINT)
        except Exception:
            _report_bug()
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


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


@click.group(cls=VolplanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Project folder to work in (default: the current folder).",
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
    help="Provider for a backend, such as aws=aws or aws=local (default: local). Repeatable.",
)
@click.option("--no-color", is_flag=True, help="Print without colour (also: NO_COLOR=1).")
@click.option("-v", "--verbose", count=True, help="Log what volplan does to stderr (-vv for debug detail).")
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


for command in (plan, apply_command, destroy, delete, validate, volume, drift, refresh, force_unlock, state_group):
    cli.add_command(command)


def main() -> None:
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
