"""state pull and state push: copy the state between a local file and its store, byte for byte.

Both commands check lineage and serial before they replace anything (see state/lineage.py),
so a state is never replaced by another project's state or by an older one without --force.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli.common import GlobalOptions, Output, color_enabled, make_workspace, parse_duration_option
from engine.errors import StateError, UsageError
from state.files import write_file_atomically
from state.lineage import check_replacement
from state.model import State, parse_state
from state.storage import StateStore
from state.store import LocalStateStore

STDIO = "-"

force_option = click.option(
    "--force",
    is_flag=True,
    help="Replace the target even if its lineage differs or its serial is newer.",
)


@click.command(name="pull")
@click.argument("file", required=False, default=STDIO)
@force_option
@click.pass_obj
def pull(options: GlobalOptions, file: str, force: bool) -> int:
    """Copy the state into a local FILE byte for byte, or print it.

    FILE is relative to the project folder (-C). Without FILE, or with -, the state is
    printed on stdout.

    An existing FILE is replaced only by a state of its lineage with a serial at least as new.

    \b
    Example:
      volplan --state s3://team-state/prod/volplan.state.json state pull volplan.state.json
    """
    workspace = make_workspace(options)
    source = workspace.store.describe()
    text = workspace.store.read_text()
    if text is None:
        raise StateError(
            "No state to pull",
            f"{source} does not exist yet. Run 'volplan apply' to create it, or 'volplan state push FILE' to "
            "upload one.",
        )
    remote = parse_state(text, source)

    if file == STDIO:
        click.echo(text, nl=False)
        return 0
    path = _local_path(options, file)
    local = LocalStateStore(path)
    if not force and not check_replacement(local.read(), remote, target=str(path), source=source):
        Output(color_enabled(options)).echo(
            f"{path} already holds serial {remote.serial} of {source}: nothing to pull."
        )
        return 0
    write_file_atomically(path, text)
    Output(color_enabled(options)).echo(f"Pulled {source} (serial {remote.serial}) into {path}.")
    return 0


@click.command(name="push")
@click.argument("file")
@force_option
@click.option(
    "--lock-timeout",
    metavar="DURATION",
    callback=parse_duration_option,
    default="0",
    show_default=True,
    help="How long to wait for the state lock (90s, 5m; 0 tries once).",
)
@click.pass_obj
def push(options: GlobalOptions, file: str, force: bool, lock_timeout: float) -> int:
    """Replace the state with a local FILE, byte for byte.

    FILE is relative to the project folder (-C); - reads standard input.

    The state is replaced only by a state of its lineage with a newer serial, while holding
    the state lock.

    \b
    Example:
      volplan --state s3://team-state/prod/volplan.state.json state push volplan.state.json
    """
    source = "standard input" if file == STDIO else str(_local_path(options, file))
    text = _read_local(file, source)
    incoming = parse_state(text, source)
    workspace = make_workspace(options)
    store = workspace.store
    output = Output(color_enabled(options))

    with store.lock("volplan state push", lock_timeout) as dead_holder:
        if dead_holder is not None:
            output.echo(
                f"Note: the previous holder of the state lock died ({dead_holder.describe()}); continuing.", err=True
            )
        current = _read_target(store, force)
        if not force and not check_replacement(current, incoming, target=store.describe(), source=source):
            output.echo(f"{store.describe()} already holds serial {incoming.serial}: nothing to push.")
            return 0
        store.write_text(text)
    output.echo(f"Pushed {source} (serial {incoming.serial}) to {store.describe()}.")
    return 0


def _local_path(options: GlobalOptions, file: str) -> Path:
    """Resolve FILE as -f does: relative to the project folder."""
    return options.directory.absolute() / file


def _read_local(file: str, source: str) -> str:
    try:
        raw = sys.stdin.buffer.read() if file == STDIO else Path(source).read_bytes()
    except OSError as error:
        raise UsageError(
            "State file unreadable", f"{source}: {error.strerror}. Pass the path of a state file."
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StateError("Damaged state file", f"{source} is not UTF-8 text, so it is not a volplan state.") from None


def _read_target(store: StateStore, force: bool) -> State | None:
    """Read the state about to be replaced; with --force a damaged one is replaced too."""
    try:
        current = store.read()
    except StateError:
        if not force:
            raise
        return None
    return current
