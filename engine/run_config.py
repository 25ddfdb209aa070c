"""Run configurations (dev-environment, task, service): the fields volplan manages.

Every other key dstack accepts is kept in `body` as written.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from engine.documents import Document, FieldPath
from engine.errors import ConfigIssue
from engine.units import UnitError, parse_duration

DEFAULT_STOP_DURATION = 300


@dataclass(frozen=True)
class NetworkMount:
    """A network volume mounted at `path`; `names` are templates, the first that fits wins."""

    names: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class InstanceMount:
    """A folder of the instance (host) mounted at `path`."""

    instance_path: str
    path: str
    optional: bool = False


Mount = NetworkMount | InstanceMount


@dataclass(frozen=True)
class RunConfiguration:
    type: str
    name: str | None
    body: dict[str, Any]
    mounts: tuple[Mount, ...] = ()
    nodes: int = 1
    # Seconds to wait for a detach before forcing it; None means wait until detached.
    stop_duration: int | None = DEFAULT_STOP_DURATION
    backends: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    availability_zones: tuple[str, ...] = ()
    # Nodes that each get rank 0 (service replicas); 1 for other types.
    replicas: int = 1
    mount_positions: tuple[FieldPath, ...] = field(default=())


def parse_run(document: Document, data: dict[str, Any], kind: str) -> tuple[RunConfiguration | None, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        issues.append(document.issue(("name",), "must be a string", value=name, fix="Quote the name."))
    mounts = _parse_mounts(document, data.get("volumes"), issues)
    nodes = _parse_nodes(document, data, kind, issues)
    stop_duration = _parse_stop_duration(document, data, issues)
    lists = {key: _string_list(document, data, key, issues) for key in ("backends", "regions", "availability_zones")}
    replicas = _parse_replicas(document, data, issues) if kind == "service" else 1
    if issues:
        return None, issues
    run = RunConfiguration(
        type=kind,
        name=name,
        body=data,
        mounts=tuple(mount for mount, _ in mounts),
        nodes=nodes,
        stop_duration=stop_duration,
        backends=lists["backends"],
        regions=lists["regions"],
        availability_zones=lists["availability_zones"],
        replicas=replicas,
        mount_positions=tuple(position for _, position in mounts),
    )
    return run, []


def _parse_mounts(document: Document, value: Any, issues: list[ConfigIssue]) -> list[tuple[Mount, FieldPath]]:
    if value is None:
        return []
    if not isinstance(value, list):
        issues.append(
            document.issue(("volumes",), "must be a list", value=value, fix="Write volumes: [my-volume:/data].")
        )
        return []
    mounts: list[tuple[Mount, FieldPath]] = []
    for index, entry in enumerate(value):
        at: FieldPath = ("volumes", index)
        mount = _parse_mount(document, entry, at, issues)
        if mount is not None:
            mounts.append((mount, at))
    return mounts


def _parse_mount(document: Document, entry: Any, at: FieldPath, issues: list[ConfigIssue]) -> Mount | None:
    if isinstance(entry, str):
        source, colon, target = entry.partition(":")
        if not colon or ":" in target or not source or not target:
            issues.append(
                document.issue(
                    at,
                    "is not a mount",
                    value=entry,
                    fix="Write NAME:/path for a volume or /host/path:/path for an instance folder.",
                )
            )
            return None
        path = _check_path(document, at, target, issues)
        if "/" in source:
            instance_path = _check_path(document, at, source, issues)
            return InstanceMount(instance_path, path) if instance_path and path else None
        return NetworkMount((source,), path) if path else None

    if isinstance(entry, dict):
        if "instance_path" in entry:
            if "name" in entry:
                issues.append(
                    document.issue(at, "mixes name and instance_path", value=entry, fix="Use one of the two.")
                )
                return None
            instance_path = _check_path(document, at + ("instance_path",), entry.get("instance_path"), issues)
            path = _check_path(document, at + ("path",), entry.get("path"), issues)
            optional = entry.get("optional", False)
            if not isinstance(optional, bool):
                issues.append(document.issue(at + ("optional",), "must be true or false", value=optional))
                return None
            return InstanceMount(instance_path, path, optional) if instance_path and path else None
        names = entry.get("name")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            issues.append(
                document.issue(at + ("name",), "must be a volume name or a list of names", value=entry.get("name"))
            )
            return None
        if "optional" in entry:
            issues.append(
                document.issue(
                    at + ("optional",),
                    "is allowed only on instance mounts",
                    value=entry["optional"],
                    fix="Remove optional: from a network volume mount.",
                )
            )
            return None
        path = _check_path(document, at + ("path",), entry.get("path"), issues)
        return NetworkMount(tuple(names), path) if path else None

    issues.append(
        document.issue(at, "is not a mount", value=entry, fix="Write NAME:/path or {name: NAME, path: /path}.")
    )
    return None


def _check_path(document: Document, at: FieldPath, value: Any, issues: list[ConfigIssue]) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        issues.append(document.issue(at, "must be an absolute path", value=value, fix="Start the path with /."))
        return ""
    if ".." in value.split("/"):
        issues.append(
            document.issue(at, "must not contain ..", value=value, fix="Write the path without .. components.")
        )
        return ""
    return posixpath.normpath(value)


def _parse_nodes(document: Document, data: dict[str, Any], kind: str, issues: list[ConfigIssue]) -> int:
    if kind != "task":
        return 1
    value = data.get("nodes", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        issues.append(document.issue(("nodes",), "must be a whole number of at least 1", value=value))
        return 1
    return value


def _parse_replicas(document: Document, data: dict[str, Any], issues: list[ConfigIssue]) -> int:
    value = data.get("replicas", 1)
    if isinstance(value, str) and ".." in value:
        value = value.split("..", 1)[0].strip() or "0"
        value = int(value) if value.isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        issues.append(
            document.issue(("replicas",), "must be a number or a range such as 1..4", value=data.get("replicas"))
        )
        return 1
    return max(value, 1)


def _parse_stop_duration(document: Document, data: dict[str, Any], issues: list[ConfigIssue]) -> int | None:
    value = data.get("stop_duration")
    if value is None or value is True:
        return DEFAULT_STOP_DURATION
    try:
        seconds = parse_duration(value)
    except UnitError as error:
        issues.append(document.issue(("stop_duration",), error.problem, value=value, fix=error.fix))
        return DEFAULT_STOP_DURATION
    if seconds is not None and seconds < 0:
        issues.append(
            document.issue(
                ("stop_duration",), "must not be negative", value=value, fix="Write a duration such as 5m, or off."
            )
        )
    return seconds


def _string_list(document: Document, data: dict[str, Any], key: str, issues: list[ConfigIssue]) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        issues.append(document.issue((key,), "must be a list of strings", value=value))
        return ()
    return tuple(value)
