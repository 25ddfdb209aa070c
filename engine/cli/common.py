"""What every command shares: global options, output with colour, the workspace, common options."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click

from engine.collection import paused_collection
from engine.errors import ConfigError, ConfigIssue, UsageError, VolplanError
from engine.project import Project, Settings, load_project, load_settings
from engine.state_settings import open_state_store
from engine.units import UnitError, parse_duration
from engine.workflow import Workspace
from providers.registry import ProviderSet, parse_provider_flag


@dataclass
class GlobalOptions:
    directory: Path = field(default_factory=Path.cwd)
    state: str | None = None
    providers: list[str] = field(default_factory=list)
    color: bool = True


_ROLE_STYLES: dict[str, dict[str, Any]] = {
    "create": {"fg": "green"},
    "update": {"fg": "yellow"},
    "replace": {"fg": "magenta"},
    "delete": {"fg": "red"},
    "warning": {"fg": "yellow", "bold": True},
    "error": {"fg": "red", "bold": True},
    "bold": {"bold": True},
}


def color_enabled(options: GlobalOptions, stream: TextIO | None = None) -> bool:
    """Return True when `stream` (default stdout) gets colour: not with --no-color, NO_COLOR or a non-terminal."""
    return wants_color(options.color, stream or sys.stdout)


def wants_color(flag: bool, stream: TextIO) -> bool:
    # NO_COLOR counts only when set to a non-empty value (https://no-color.org).
    return flag and not os.environ.get("NO_COLOR") and stream.isatty()


class Output:
    """Printing for one command, with colour only where the user wants it."""

    def __init__(self, color: bool) -> None:
        self.color = color
        self._lock = threading.Lock()

    def paint(self, text: str, role: str) -> str:
        return click.style(text, **_ROLE_STYLES.get(role, {})) if self.color else text

    def echo(self, text: str = "", *, err: bool = False) -> None:
        with self._lock:
            click.echo(text, err=err, color=self.color)


def error_text(error: VolplanError, output: Output) -> str:
    lines = [output.paint("Error: ", "error") + error.title]
    if error.detail:
        lines.append("")
        lines.extend("  " + line for line in error.detail.splitlines())
    return "\n".join(lines)


def parse_duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    if value is None:
        return 0.0
    try:
        seconds = parse_duration(value, allow_off=False)
    except UnitError:
        raise click.BadParameter(
            f"{value!r} is not a duration. Write one number and one unit (90s, 5m, 1h, 2d, 1w) or bare seconds."
        ) from None
    if seconds is None or seconds < 0:
        raise click.BadParameter(f"{value!r} must not be negative.")
    return float(seconds)


def make_workspace(options: GlobalOptions, project: Project | None = None) -> Workspace:
    root = options.directory.absolute()
    if options.state and not options.state.startswith("s3://") and Path(options.state).name in ("", ".", ".."):
        raise UsageError(
            "Invalid value for --state",
            f"{options.state!r} names a folder, not a file. Pass --state PATH/volplan.state.json.",
        )
    project_settings = project.settings if project is not None else load_project_settings(root)
    store = open_state_store(root, options.state, project_settings.state)

    providers = ProviderSet()
    if project is not None:
        for backend, settings in project.settings.providers.items():
            providers.kinds[backend] = settings.kind
            providers.options[backend] = settings.options
    for flag in options.providers:
        backend, kind = parse_provider_flag(flag)
        providers.kinds[backend] = kind
    return Workspace(root, store, providers)


def load(options: GlobalOptions, files: tuple[str, ...]) -> Project:
    with paused_collection():
        return load_project(options.directory.absolute(), list(files) or None)


file_option = click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="FILE",
    help="Use only this configuration file, relative to the project folder; repeatable.  [default: every *.dstack.yml under the project folder]",
)


def terraform_plan_options(function: Any) -> Any:
    """Add Terraform's plan options that have nothing to do in a volplan plan, so that CI lines
    such as `plan -input=false -lock-timeout=5m` keep working. A plan never prompts, never takes
    the state lock, and refreshes in batches."""
    decorators = [
        click.option(
            "--input",
            "allow_input",
            type=click.BOOL,
            default=True,
            is_flag=False,
            flag_value=True,
            show_default=True,
            help="Accepted for Terraform compatibility; plan never asks a question.",
        ),
        click.option(
            "--lock-timeout",
            "lock_timeout",
            metavar="DURATION",
            callback=parse_duration_option,
            default="0",
            show_default=True,
            help="Accepted for Terraform compatibility; plan reads the state without locking it.",
        ),
        click.option(
            "--parallelism",
            type=click.IntRange(min=1, max=1000),
            default=10,
            show_default=True,
            help="Accepted for Terraform compatibility; plan refreshes in batches, not one call per resource.",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


refresh_option = click.option(
    "--refresh",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="Read the volumes' real state from the providers first; --refresh=false plans from the state alone.",
)
replace_option = click.option(
    "--allow-replace", is_flag=True, help="Allow changes that replace a volume, destroying its data."
)


def target_options(function: Any) -> Any:
    """Add --target, --exclude and --replace, which Terraform spells -target, -exclude and -replace."""
    decorators = [
        click.option(
            "--target",
            "targets",
            metavar="ADDR",
            multiple=True,
            show_default="every resource",
            help="Plan only this resource and what it depends on, such as volume.data. Repeatable.",
        ),
        click.option(
            "--exclude",
            "excludes",
            metavar="ADDR",
            multiple=True,
            show_default="none",
            help="Leave this resource, and what depends on it, out of the plan. Repeatable.",
        ),
        click.option(
            "--replace",
            "replace",
            metavar="ADDR",
            multiple=True,
            show_default="none",
            help="Replace this volume with a new one even if nothing changed (needs --allow-replace "
            "when that destroys data). Repeatable.",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def load_project_settings(root: Path) -> Settings:
    issues: list[ConfigIssue] = []
    settings = load_settings(root, issues)
    if issues:
        raise ConfigError(issues)
    return settings


def require_terminal(allow_input: bool, command: str) -> None:
    """Raise unless a person can answer a prompt on this terminal."""
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


def describe_failure(error: BaseException | None) -> str:
    if isinstance(error, VolplanError):
        return f"{error.title}: {error.detail}" if error.detail else error.title
    return f"internal error ({type(error).__name__}); run with -vv for the traceback"
