"""show: print the state, or a state file given by path, for people or as JSON.

A FILE argument is read by `read_shown_file`, and a state file is shown as state. Any other file
goes to `read_saved_plan`, which is the one place to connect to saved plans once `plan -out`
writes them. A plan is then printed as `volplan plan` prints it, for people or as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.actions import Plan
from engine.cli.common import GlobalOptions, Output, color_enabled, make_workspace
from engine.errors import UsageError
from engine.render import render_human, render_json
from engine.units import format_duration
from state.model import State, parse_state

# Fields shown in every block's header rather than as a field.
_HEADER_FIELDS = ("address", "kind", "name")


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the state document itself, or the JSON plan.")
@click.pass_obj
def show(options: GlobalOptions, file: Path | None, as_json: bool) -> int:
    """Print what the state records, without calling a provider.

    With no FILE, shows the project's state (see --state). With FILE, a path relative to the
    project folder, shows that state file.

    \b
    Example:
      volplan show
      volplan show --json | jq '.resources[].id'
      volplan show volplan.state.json.backup
    """
    output = Output(color_enabled(options) and not as_json)
    if file is None:
        store = make_workspace(options).store
        state = store.read()
        origin: str | Path = store.describe()
    else:
        document = read_shown_file(options.directory / file)
        if isinstance(document, Plan):
            output.echo(render_json(document) if as_json else render_human(document, output.paint))
            return 0
        state, origin = document, file

    if as_json:
        output.echo(json.dumps(state.to_json() if state else None, indent=2, sort_keys=True))
    else:
        output.echo(render_state(state, origin, output))
    return 0


def read_shown_file(path: Path) -> State | Plan:
    """Read FILE: a state file when it is one, otherwise a saved plan."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            "File not found", f"{path} does not exist. Run volplan show without a file to see the state."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError("File unreadable", f"{path}: {error}.") from None

    if _looks_like_state(text):
        return parse_state(text, str(path))
    return read_saved_plan(path)


def read_saved_plan(path: Path) -> Plan:
    # TODO: read the plan with the saved-plan module once `plan -out` writes plan files. Until
    # then, every file that is not a state file is rejected here.
    raise UsageError(
        "Not a state file",
        f"{path} is not a volplan state file, and this volplan does not write saved plans. "
        "Pass a state file (such as volplan.state.json or its .backup), or no file to see the project's state.",
    )


def _looks_like_state(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and "lineage" in data and "resources" in data


def render_state(state: State | None, origin: str | Path, output: Output) -> str:
    if state is None:
        return f"No state: {origin} does not exist yet. volplan apply creates it."
    count = len(state.resources)
    lines = [
        output.paint("State:", "bold")
        + f" {origin} (serial {state.serial}, lineage {state.lineage}, {count} resource{'s' if count != 1 else ''})"
    ]
    if not state.resources:
        lines.extend(["", "The state has no resources. volplan apply adds what the configurations define."])
    for address in sorted(state.resources):
        lines.append("")
        lines.extend(_render_record(state.resources[address], output))
    return "\n".join(lines)


def _render_record(record: dict[str, Any], output: Output) -> list[str]:
    kind = record.get("kind", "resource")
    name = record.get("name", record["address"])
    lines = [output.paint(f"# {record['address']}", "bold"), f'{kind} "{name}" {{']
    names = sorted(key for key in record if key not in _HEADER_FIELDS)
    width = max((len(key) for key in names), default=0)
    for key in names:
        lines.append(f"    {key.ljust(width)} = {_value(key, record[key])}")
    lines.append("}")
    return lines


def _value(key: str, value: Any) -> str:
    if key == "auto_cleanup_duration" and isinstance(value, int) and not isinstance(value, bool):
        return f"{json.dumps(value)}  # {format_duration(value)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value)
