"""validate: check configurations without state or providers."""

from __future__ import annotations

import json

import click

from engine.cli.common import GlobalOptions, file_option, load
from engine.errors import ConfigError


@click.command()
@file_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def validate(options: GlobalOptions, files: tuple[str, ...], as_json: bool) -> int:
    """Check the configurations without reading the state or calling a provider.

    \b
    Example:
      volplan validate -f train.dstack.yml
    """
    try:
        project = load(options, files)
    except ConfigError as error:
        if not as_json:
            raise
        click.echo(json.dumps({"valid": False, "errors": [issue.__dict__ for issue in error.issues]}, indent=2))
        return 1
    if as_json:
        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "errors": [],
                    "files": project.files,
                    "volumes": sorted(project.volumes),
                    "runs": sorted(project.runs),
                },
                indent=2,
            )
        )
    else:
        counts = [
            _count(len(project.files), "file"),
            _count(len(project.volumes), "volume"),
            _count(len(project.runs), "run"),
        ]
        click.echo(f"Valid: {', '.join(counts)}.")
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
