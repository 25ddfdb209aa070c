"""Run configurations (dev-environment, task, service): the fields volplan manages.

The volume-related fields (`volumes`, `nodes`, task `groups`, `stop_duration`, `backends`,
`regions`, `availability_zones`, `name`) are checked as dstack 0.22.5 checks them, plus the
rules volplan adds (docs/configuration.md). Every other key dstack accepts is kept in `body` as
written. Of those, volplan checks only what decides whether dstack accepts the file at all:
`commands` or `image`, a service's `port`, and the shape of `replicas` and `groups`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.documents import Document, FieldPath
from engine.dstack_keys import BACKENDS
from engine.errors import ConfigIssue
from engine.model_errors import did_you_mean, translate_errors
from engine.mounts import InstanceMount, Mount, NetworkMount, check_mount_names, parse_mounts
from engine.run_groups import NodeGroup, parse_node_groups, parse_service_replicas
from engine.units import UnitError, parse_duration
from engine.volume_config import VOLUME_NAME_FIX, is_volume_name

__all__ = [
    "DEFAULT_STOP_DURATION",
    "InstanceMount",
    "Mount",
    "NetworkMount",
    "NodeGroup",
    "RunConfiguration",
    "parse_run",
]

DEFAULT_STOP_DURATION = 300
# Every node of a run gets its own plan entries and mount renderings; far above any real cluster,
# this keeps a mistyped `nodes: 100000000` from planning for hours.
MAX_RUN_NODES = 10_000


@dataclass(frozen=True)
class RunConfiguration:
    type: str
    name: str | None
    body: dict[str, Any]
    mounts: tuple[Mount, ...] = ()
    # Nodes of the run, each with its own rank: a task's `nodes`, or the sum of its groups' nodes.
    nodes: int = 1
    # Seconds to wait for a detach before forcing it; None means wait until detached.
    stop_duration: int | None = DEFAULT_STOP_DURATION
    backends: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    availability_zones: tuple[str, ...] = ()
    # Nodes that each get rank 0 (service replicas, at the lower bound of a range); 1 for other types.
    replicas: int = 1
    mount_positions: tuple[FieldPath, ...] = field(default=())
    # A task's node groups in rank order; one group named "0" for a task without `groups`.
    node_groups: tuple[NodeGroup, ...] = ()

    def node_ranks(self) -> range:
        """Return the `dstack.node_rank` values that the run's mounts are rendered for."""
        return range(self.nodes) if self.type == "task" else range(1)


class _RunFields(BaseModel):
    """The scalar fields volplan reads, with dstack's types (pydantic's lax coercion included)."""

    # Built on the first run file read, so that commands on projects without runs skip it.
    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str | None = None
    nodes: int | None = Field(default=None, ge=1)
    stop_duration: int | None = DEFAULT_STOP_DURATION
    backends: list[str] | None = None
    regions: list[str] | None = None
    availability_zones: list[str] | None = None
    image: str | None = None
    commands: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not is_volume_name(value):
            raise UnitError("is not a valid run name", VOLUME_NAME_FIX)
        return value

    @field_validator("stop_duration", mode="before")
    @classmethod
    def _check_stop_duration(cls, value: object) -> object:
        # As dstack: absent or true is the default, off or false waits forever, negative is invalid.
        if value is None or value is True:
            return DEFAULT_STOP_DURATION
        seconds = parse_duration(value)
        if seconds is not None and seconds < 0:
            raise UnitError("must not be negative", "Write a duration such as 5m, or off.")
        return seconds

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name not in BACKENDS:
                hint = did_you_mean(name, BACKENDS)
                raise UnitError(
                    f"lists {name}, which is not a dstack backend",
                    hint or "Use dstack backend names such as aws or gcp.",
                )
        return value


def parse_run(document: Document, data: dict[str, Any], kind: str) -> tuple[RunConfiguration | None, list[ConfigIssue]]:
    """Check one run configuration and collect every issue, or return the run."""
    issues: list[ConfigIssue] = []
    try:
        fields = _RunFields.model_validate(data)
    except ValidationError as error:
        issues.extend(translate_errors(document, data, error))
        fields = None

    mounts = parse_mounts(document, data.get("volumes"), issues)
    groups = parse_node_groups(document, data, issues) if kind == "task" else ()
    replicas = parse_service_replicas(document, data, issues) if kind == "service" else 1
    _check_required(document, data, kind, issues)

    nodes = sum(group.nodes for group in groups) if groups else 1
    if nodes > MAX_RUN_NODES:
        issues.append(_too_many_nodes(document, data, nodes))
        nodes = 1
    ranks = range(nodes) if kind == "task" else range(1)
    check_mount_names(document, mounts, ranks, issues)
    if issues or fields is None:
        return None, issues

    run = RunConfiguration(
        type=kind,
        name=fields.name,
        body=data,
        mounts=tuple(mount for mount, _ in mounts),
        nodes=nodes if kind == "task" else 1,
        stop_duration=fields.stop_duration,
        backends=tuple(fields.backends or ()),
        regions=tuple(fields.regions or ()),
        availability_zones=tuple(fields.availability_zones or ()),
        replicas=replicas,
        mount_positions=tuple(position for _, position in mounts),
        node_groups=groups,
    )
    return run, []


def _too_many_nodes(document: Document, data: dict[str, Any], nodes: int) -> ConfigIssue:
    key = "groups" if data.get("groups") is not None else "nodes"
    return document.issue(
        (key,),
        f"asks for {nodes:,} nodes, more than the {MAX_RUN_NODES:,} volplan plans for one run",
        value=data.get(key) if key == "nodes" else None,
        show_value=key == "nodes",
        fix=f"Use at most {MAX_RUN_NODES:,} nodes, or split the task into several runs.",
    )


def _check_required(document: Document, data: dict[str, Any], kind: str, issues: list[ConfigIssue]) -> None:
    """dstack's rules on what a task or service must define (and where, with groups)."""
    if kind == "service" and "port" not in data:
        issues.append(
            _missing(document, "port", "a service needs the port its application listens on", "Add port: 8000.")
        )

    groups = data.get("groups")
    replica_list = kind == "service" and isinstance(data.get("replicas"), list)
    needs_commands = kind in ("task", "service") and groups is None and not replica_list
    if needs_commands and not data.get("commands") and not data.get("image"):
        issues.append(
            _missing(
                document,
                "commands",
                "a task or service needs commands or an image (neither is set)",
                "Add commands: [...] or image: NAME.",
            )
        )
    if kind == "dev-environment" and data.get("entrypoint") is not None:
        issues.append(
            document.issue(
                ("entrypoint",),
                "is not supported for a dev-environment",
                value=data.get("entrypoint"),
                fix="Remove entrypoint:, or use a task.",
            )
        )


def _missing(document: Document, key: str, problem: str, fix: str) -> ConfigIssue:
    """Return an issue for a missing key, located at the file's `type:` line."""
    line, column = document.position(("type",), key=True)
    return ConfigIssue(document.path, line, column, key, None, f"is missing: {problem}", fix)
