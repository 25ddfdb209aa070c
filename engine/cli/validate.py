"""validate: check configurations without state or providers."""

from __future__ import annotations

import json
from typing import Any

import click

from engine.cli.common import GlobalOptions, file_option, load
from engine.errors import ConfigError
from engine.nodes import RenderedMount, RunNode, run_nodes
from engine.project import DesiredRun, Project
from engine.run_config import RunConfiguration
from engine.units import format_duration


@click.command()
@file_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, with each run's nodes and mounts.")
@click.pass_obj
def validate(options: GlobalOptions, files: tuple[str, ...], as_json: bool) -> int:
    """Check the configurations without reading the state or calling a provider.

    Each file is checked on its own, then the rules that span files (volume and run names
    are unique in a project). Exits 0 when everything is valid, 1 otherwise.

    \b
    Example:
      volplan validate -f train.dstack.yml
    """
    try:
        project = load(options, files)
    except ConfigError as error:
        if not as_json:
            raise
        errors = [{**issue.__dict__, "message": issue.format()} for issue in error.issues]
        click.echo(json.dumps({"valid": False, "errors": errors}, indent=2))
        return 1
    if as_json:
        click.echo(json.dumps(_project_json(project), indent=2))
    else:
        counts = [
            _count(len(project.files), "file"),
            _count(len(project.volumes), "volume"),
            _count(len(project.runs), "run"),
        ]
        click.echo(f"Valid: {', '.join(counts)}.")
    return 0


def _project_json(project: Project) -> dict[str, Any]:
    return {
        "valid": True,
        "errors": [],
        "files": project.files,
        "volumes": sorted(project.volumes),
        "runs": [_run_json(run) for _, run in sorted(project.runs.items())],
    }


def _run_json(run: DesiredRun) -> dict[str, Any]:
    config = run.config
    return {
        "address": run.address,
        "file": run.file,
        "type": config.type,
        "replicas": config.replicas,
        "stop_duration": format_duration(config.stop_duration),
        "backends": list(config.backends),
        "regions": list(config.regions),
        "availability_zones": list(config.availability_zones),
        "nodes": [
            {
                "address": f"{run.address}.node[{index}]",
                "rank": node.rank,
                "group": node.group,
                "mounts": [_mount_json(f"{run.address}.node[{index}]", mount) for mount in node.mounts],
            }
            for index, node in enumerate(_nodes(config))
        ],
    }


def _nodes(config: RunConfiguration) -> list[RunNode]:
    """Return a task's nodes in rank order, or one node per replica, all of rank 0, for a service."""
    nodes = run_nodes(config)
    if config.type == "service":
        return nodes[:1] * max(config.replicas, 1)
    return nodes


def _mount_json(node_address: str, mount: RenderedMount) -> dict[str, Any]:
    entry: dict[str, Any] = {"address": f"{node_address}.mount[{mount.path}]", "path": mount.path}
    if mount.instance_path is not None:
        entry.update(instance_path=mount.instance_path, optional=mount.optional)
    else:
        entry["volume_names"] = list(mount.volume_names)
    return entry


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
