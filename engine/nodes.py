"""Expand a run into its nodes, each with its mounts and their rendered volume names.

A task has one node per `dstack.node_rank`, from 0 to its node count minus 1, across its node
groups in order. A service or dev environment is described by its rank-0 node (every service
replica has rank 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.mounts import InstanceMount, NetworkMount
from engine.run_config import NodeGroup, RunConfiguration
from engine.templates import render_volume_name


@dataclass(frozen=True)
class RenderedMount:
    """A mount of one node: network volume names rendered for its rank, or a host folder."""

    path: str
    volume_names: tuple[str, ...] = ()
    instance_path: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class RunNode:
    rank: int
    group: str | None
    mounts: tuple[RenderedMount, ...]


def run_nodes(run: RunConfiguration) -> list[RunNode]:
    """Return the run's nodes in rank order. The run's templates must have passed validation."""
    groups = run.node_groups if run.type == "task" else ()
    if not groups:
        return [RunNode(0, None, render_mounts(run, 0))]
    return [RunNode(rank, group.name, render_mounts(run, rank)) for group in groups for rank in _ranks(group)]


def render_mounts(run: RunConfiguration, rank: int) -> tuple[RenderedMount, ...]:
    rendered = []
    for mount in run.mounts:
        if isinstance(mount, NetworkMount):
            names = tuple(render_volume_name(name, rank) for name in mount.names)
            rendered.append(RenderedMount(mount.path, volume_names=names))
        elif isinstance(mount, InstanceMount):
            rendered.append(RenderedMount(mount.path, instance_path=mount.instance_path, optional=mount.optional))
    return tuple(rendered)


def _ranks(group: NodeGroup) -> range:
    return range(group.first_rank, group.first_rank + group.nodes)
