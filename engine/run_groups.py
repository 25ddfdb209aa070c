"""A task's node groups and a service's replicas, as dstack 0.22.5 reads them.

Node groups decide the node ranks: ranks run from 0 across the groups in file order, so a task
with groups of 2 and 3 nodes has ranks 0 to 4. Service replicas all have rank 0.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.documents import Document, FieldPath
from engine.errors import ConfigIssue
from engine.mounts import check_known_keys

GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
NODE_GROUP_KEYS = frozenset({"name", "nodes", "resources", "commands", "ports"})
# Top-level keys a task may not set when it has groups: each group sets its own.
_GROUP_ONLY_TASK_KEYS = ("commands", "ports", "entrypoint")


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of a task that share a configuration; their ranks start at `first_rank`."""

    name: str
    nodes: int
    first_rank: int = 0


def parse_node_groups(document: Document, data: dict[str, Any], issues: list[ConfigIssue]) -> tuple[NodeGroup, ...]:
    """Read a task's `groups` (or its `nodes`, as one group named "0")."""
    groups = data.get("groups")
    if groups is None:
        nodes = _whole_number(data.get("nodes", 1))
        return (NodeGroup("0", nodes if nodes is not None and nodes >= 1 else 1),)

    if data.get("nodes") is not None:
        issues.append(
            document.issue(
                ("nodes",),
                "cannot be used together with groups",
                value=data["nodes"],
                fix="Give each group its nodes: instead.",
            )
        )
    for key in _GROUP_ONLY_TASK_KEYS:
        if key in data and data[key] not in (None, [], ""):
            issues.append(
                document.issue(
                    (key,),
                    "is not allowed at the top level when groups is set",
                    value=data[key],
                    fix=f"Set {key}: in each group instead.",
                )
            )
    if not isinstance(groups, list) or not groups:
        issues.append(document.issue(("groups",), "must be a non-empty list of node groups", value=groups))
        return ()

    parsed = [_parse_node_group(document, data, entry, index, issues) for index, entry in enumerate(groups)]
    _check_unique_names(document, [group for group in parsed if group is not None], issues)
    return _assign_ranks([group for group in parsed if group is not None])


def _parse_node_group(
    document: Document, data: dict[str, Any], entry: Any, index: int, issues: list[ConfigIssue]
) -> NodeGroup | None:
    at: FieldPath = ("groups", index)
    if not isinstance(entry, dict):
        issues.append(document.issue(at, "must be a mapping with nodes: and commands:", value=entry))
        return None
    ok = check_known_keys(document, entry, at, NODE_GROUP_KEYS, "a node group", issues)

    name = entry.get("name", str(index))
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        issues.append(
            document.issue(
                at + ("name",),
                "is not a valid group name",
                value=name,
                fix="Use 1 to 40 lowercase letters, digits or '-'.",
            )
        )
        ok = False
    nodes = _whole_number(entry.get("nodes", 1))
    if nodes is None or nodes < 1:
        issues.append(document.issue(at + ("nodes",), "must be a whole number of at least 1", value=entry.get("nodes")))
        ok = False
    if not entry.get("commands") and data.get("image") is None:
        issues.append(
            document.issue(
                at,
                "has no commands, and the task has no image",
                value=entry,
                fix="Add commands: to the group, or image: to the task.",
                show_value=False,
            )
        )
        ok = False
    return NodeGroup(name, nodes) if ok and isinstance(name, str) and nodes else None


def _check_unique_names(document: Document, groups: list[NodeGroup], issues: list[ConfigIssue]) -> None:
    seen: set[str] = set()
    for group in groups:
        if group.name in seen:
            issues.append(
                document.issue(
                    ("groups",),
                    f"has two groups named {group.name}",
                    fix="Give each group a unique name.",
                    show_value=False,
                )
            )
        seen.add(group.name)


def _assign_ranks(groups: list[NodeGroup]) -> tuple[NodeGroup, ...]:
    ranked = []
    first = 0
    for group in groups:
        ranked.append(NodeGroup(group.name, group.nodes, first))
        first += group.nodes
    return tuple(ranked)


def parse_service_replicas(document: Document, data: dict[str, Any], issues: list[ConfigIssue]) -> int:
    """Check a service's `replicas` or replica `groups`; return the replicas at the lower bound (at least 1)."""
    replicas = data.get("replicas")
    groups = data.get("groups")
    groups_key = "groups"
    if isinstance(replicas, list) and groups is None:
        # dstack reads a list under replicas: as replica groups.
        groups, replicas, groups_key = replicas, None, "replicas"
    if groups is not None and replicas is not None:
        issues.append(
            document.issue(
                ("replicas",),
                "cannot be used together with groups",
                value=replicas,
                fix="Set replicas: in each group instead.",
            )
        )
        return 1
    if groups is not None:
        return _parse_replica_groups(document, data, groups, groups_key, issues)
    if replicas is None:
        return 1
    low = _replica_count(document, ("replicas",), replicas, "scaling" in data and data["scaling"] is not None, issues)
    return max(low, 1)


def _parse_replica_groups(
    document: Document, data: dict[str, Any], groups: Any, key: str, issues: list[ConfigIssue]
) -> int:
    for top in ("commands", "scaling"):
        if data.get(top):
            issues.append(
                document.issue(
                    (top,),
                    "is not allowed at the top level when replica groups are set",
                    value=data[top],
                    fix=f"Set {top}: in each group instead.",
                )
            )
    if not isinstance(groups, list) or not groups:
        issues.append(document.issue((key,), "must be a non-empty list of replica groups", value=groups))
        return 1

    total = 0
    for index, entry in enumerate(groups):
        at: FieldPath = (key, index)
        if not isinstance(entry, dict):
            issues.append(document.issue(at, "must be a mapping with replicas: and commands:", value=entry))
            continue
        count_key = "replicas" if "replicas" in entry else "count"
        if count_key not in entry:
            issues.append(document.issue(at, "has no replicas: count", fix="Add replicas: 1.", show_value=False))
            continue
        total += _replica_count(document, at + (count_key,), entry[count_key], entry.get("scaling") is not None, issues)
        if not entry.get("commands") and entry.get("image") is None and data.get("image") is None:
            issues.append(
                document.issue(
                    at,
                    "has no commands or image, and the service has no image",
                    fix="Add commands: or image: to the group.",
                    show_value=False,
                )
            )
    return max(total, 1)


def _replica_count(document: Document, at: FieldPath, value: Any, has_scaling: bool, issues: list[ConfigIssue]) -> int:
    """Check a replica count or range (`2`, `0..4`); return its lower bound."""
    bounds = _parse_range(value)
    problem = ""
    if bounds is None:
        problem = "is not a number or a range"
    elif bounds[1] is None:
        problem = "has no maximum number of replicas"
    elif bounds[0] is not None and bounds[0] < 0:
        problem = "must not be negative"
    elif bounds[0] is not None and bounds[0] > bounds[1]:
        problem = "has its minimum above its maximum"
    if problem or bounds is None:
        issues.append(document.issue(at, problem, value=value, fix="Write a number such as 2 or a range such as 1..4."))
        return 1

    low = bounds[0] or 0
    if low != bounds[1] and not has_scaling:
        issues.append(
            document.issue(
                at, "is a range, which needs scaling:", value=value, fix="Add scaling: {metric: rps, target: 10}."
            )
        )
    elif low == bounds[1] and has_scaling:
        issues.append(
            document.issue(
                at,
                "is a fixed number, but scaling: needs a range",
                value=value,
                fix="Write a range such as 1..4, or remove scaling:.",
            )
        )
    return low


def _parse_range(value: Any) -> tuple[int | None, int | None] | None:
    """Read dstack's range forms: `2`, `"1..4"`, `"..4"`, `"1.."`, `{min: 1, max: 4}`."""
    if isinstance(value, str) and ".." in value:
        parts = value.replace(" ", "").split("..")
        if len(parts) != 2:
            return None
        low, high = (_whole_number(part) if part else None for part in parts)
        if (parts[0] and low is None) or (parts[1] and high is None):
            return None
    elif isinstance(value, (str, int, float)):
        low = high = _whole_number(value)
        if low is None:
            return None
    elif isinstance(value, dict) and set(value) <= {"min", "max"}:
        low, high = (_whole_number(value[key]) if value.get(key) is not None else None for key in ("min", "max"))
    else:
        return None
    if low is None and high is None:
        return None
    return low, high


@functools.cache
def _lax_int() -> TypeAdapter[int]:
    """Return pydantic's lax int validator, built on first use: a project of volumes alone never needs it."""
    return TypeAdapter(int)


def _whole_number(value: Any) -> int | None:
    """Read an integer as pydantic's lax mode does (`"2"`, `2.0` and `true` included); None if invalid."""
    try:
        return _lax_int().validate_python(value)
    except ValidationError:
        return None
