"""force-unlock: clear a state lock that its holder cannot release any more."""

from __future__ import annotations

import click

from engine.cli.common import GlobalOptions, Output, color_enabled, make_workspace, require_terminal
from state.locking import LockInfo


@click.command(name="force-unlock")
@click.argument("lock_id")
@click.option("-y", "--yes", "--auto-approve", "auto_approve", is_flag=True, help="Clear the lock without asking.")
@click.option(
    "--input",
    "allow_input",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    help="Ask for approval on the terminal; --input=false fails instead of asking.",
)
@click.pass_obj
def force_unlock(options: GlobalOptions, lock_id: str, auto_approve: bool, allow_input: bool) -> int:
    """Clear the state lock LOCK_ID, as shown by the command that found the state locked.

    A local state's lock is an operating-system lock: it ends with its process, and this
    command only clears the record that a dead holder left. A lock whose holder still runs is
    never taken. An S3 state's lock is a lease object, which this command deletes at once,
    even while its holder runs.

    \b
    Example:
      volplan force-unlock 6f1c2a0e-3d4b-4c5d-9e8f-0a1b2c3d4e5f
    """
    workspace = make_workspace(options)
    output = Output(color_enabled(options))

    def confirm(holder: LockInfo) -> bool:
        output.echo(f"{workspace.store.describe()}: {holder.describe()}.")
        output.echo()
        if auto_approve:
            return True
        require_terminal(allow_input, "force-unlock")
        output.echo(
            "Do you really want to force-unlock?\n"
            "  If its holder still runs, two commands may then change the state at once.\n"
            "  Only 'yes' will be accepted to approve.\n"
        )
        answer: str = click.prompt("  Enter a value", default="", show_default=False)
        return answer.strip() == "yes"

    cleared = workspace.store.state_lock.force_unlock(lock_id, confirm)
    if cleared is None:
        output.echo("Force-unlock cancelled: the lock was not changed.", err=True)
        return 1
    output.echo(f"Lock {cleared.lock_id} cleared: the state is unlocked.")
    return 0
