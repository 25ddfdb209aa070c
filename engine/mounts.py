"""A run's `volumes:` list: network volume mounts and instance (host) folder mounts.

The forms are dstack's. The short form is `src:dst` with exactly one colon, where a `src`
containing `/` is a host path and anything else a volume name. The long forms are `{name, path}`
(name may be a list, for volumes in several regions or backends) and
`{instance_path, path, optional}`. Paths
must be absolute without `..`, and are normalised as dstack normalises them (PurePosixPath).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.documents import Document, FieldPath
from engine.errors import ConfigIssue
from engine.model_errors import did_you_mean, lookup
from engine.templates import Expression, TemplateError, render_volume_name, split_template
from engine.volume_config import VOLUME_NAME_FIX, is_volume_name

# The folder dstack clones the repository into; volplan keeps network volumes out of it.
RESERVED_FOLDER = "workflow"
NETWORK_MOUNT_KEYS = frozenset({"name", "path"})
INSTANCE_MOUNT_KEYS = frozenset({"instance_path", "path", "optional"})
# Seconds that validating one name template may take across all the node ranks of its run. One
# rendering is bounded in size by engine.templates; this bounds the product with the node count.
RENDER_TIME_LIMIT = 10.0


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


def parse_mounts(document: Document, value: Any, issues: list[ConfigIssue]) -> list[tuple[Mount, FieldPath]]:
    """Read `volumes:`; return each valid mount with the field path of its entry."""
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
        return _parse_short_mount(document, entry, at, issues)
    if isinstance(entry, dict) and "instance_path" in entry:
        return _parse_instance_mount(document, entry, at, issues)
    if isinstance(entry, dict):
        return _parse_network_mount(document, entry, at, issues)
    issues.append(
        document.issue(at, "is not a mount", value=entry, fix="Write NAME:/path or {name: NAME, path: /path}.")
    )
    return None


def _parse_short_mount(document: Document, entry: str, at: FieldPath, issues: list[ConfigIssue]) -> Mount | None:
    parts = entry.split(":")
    if len(parts) != 2 or not parts[0]:
        issues.append(
            document.issue(
                at,
                "is not a mount: the short form is SOURCE:PATH with exactly one colon",
                value=entry,
                fix="Write NAME:/path for a volume or /host/path:/path for an instance folder.",
            )
        )
        return None

    source, target = parts
    if "/" in source:
        instance_path = _check_path(document, at, source, issues)
        path = _check_path(document, at, target, issues)
        return InstanceMount(instance_path, path) if instance_path and path else None
    path = _check_path(document, at, target, issues)
    return _network_mount(document, at, (source,), path, issues)


def _parse_instance_mount(
    document: Document, entry: dict[Any, Any], at: FieldPath, issues: list[ConfigIssue]
) -> Mount | None:
    if "name" in entry:
        issues.append(
            document.issue(
                at + ("name",),
                "cannot be used together with instance_path",
                value=entry["name"],
                fix="Use name: for a network volume or instance_path: for a host folder, in separate entries.",
            )
        )
        return None
    if not check_known_keys(document, entry, at, INSTANCE_MOUNT_KEYS, "an instance mount", issues):
        return None

    instance_path = _check_path(document, at + ("instance_path",), entry.get("instance_path"), issues)
    path = _check_path(document, at + ("path",), entry.get("path"), issues)
    try:
        optional = _lax_bool().validate_python(entry.get("optional", False))
    except ValidationError:
        issues.append(
            document.issue(
                at + ("optional",), "must be true or false", value=entry.get("optional"), fix="Write optional: true."
            )
        )
        return None
    return InstanceMount(instance_path, path, optional) if instance_path and path else None


@functools.cache
def _lax_bool() -> TypeAdapter[bool]:
    """Return pydantic's lax bool validator, built on first use: few runs mount instance folders."""
    return TypeAdapter(bool)


def _parse_network_mount(
    document: Document, entry: dict[Any, Any], at: FieldPath, issues: list[ConfigIssue]
) -> Mount | None:
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
    if not check_known_keys(document, entry, at, NETWORK_MOUNT_KEYS, "a volume mount", issues):
        return None

    names = entry.get("name")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        issues.append(
            document.issue(
                at + ("name",),
                "must be a volume name or a non-empty list of names" if "name" in entry else "is missing",
                value=entry.get("name"),
                fix="Write name: my-volume, or name: [my-volume-eu, my-volume-us].",
                show_value="name" in entry,
            )
        )
        return None
    path = _check_path(document, at + ("path",), entry.get("path"), issues)
    return _network_mount(document, at + ("path",), tuple(names), path, issues)


def _network_mount(
    document: Document, at: FieldPath, names: tuple[str, ...], path: str, issues: list[ConfigIssue]
) -> NetworkMount | None:
    if not path:
        return None
    # `path` is normalised, so its first part follows the leading "/".
    if path.split("/")[1] == RESERVED_FOLDER:
        issues.append(
            document.issue(
                at,
                f"mounts a network volume at {path}, inside /{RESERVED_FOLDER}, the folder reserved for the repository",
                value=path,
                fix=f"Mount it elsewhere, such as /data; only instance folders may be mounted under /{RESERVED_FOLDER}.",
            )
        )
        return None
    return NetworkMount(names, path)


def check_known_keys(
    document: Document,
    entry: dict[Any, Any],
    at: FieldPath,
    allowed: frozenset[str],
    kind: str,
    issues: list[ConfigIssue],
) -> bool:
    unknown = [key for key in entry if key not in allowed]
    for key in unknown:
        hint = did_you_mean(str(key), allowed)
        issues.append(
            document.issue(
                at + (str(key),), f"is not a field of {kind}", fix=hint or "Remove it.", key=True, show_value=False
            )
        )
    return not unknown


def _check_path(document: Document, at: FieldPath, value: Any, issues: list[ConfigIssue]) -> str:
    """Return the normalised path, or "" after recording why it is invalid."""
    problem = ""
    if value is None:
        problem = "has no path"
    elif not isinstance(value, str):
        problem = "must be a path"
    elif "\x00" in value:
        problem = "contains a NUL character"
    elif not value.startswith("/"):
        problem = "must be an absolute path"
    elif ".." in value.split("/"):
        problem = "must not contain .."
    elif "[" in value or "]" in value:
        # A mount's address is run.NAME.node[RANK].mount[PATH], so brackets would make it ambiguous.
        problem = "must not contain [ or ], which volplan's resource addresses use"
    if problem:
        issues.append(
            document.issue(at, problem, value=value, fix="Write an absolute path such as /data, without .. parts.")
        )
        return ""
    return normalize_path(value)


def normalize_path(path: str) -> str:
    """Normalise an absolute path as PurePosixPath does, but always with one leading "/".

    PurePosixPath drops empty and "." parts, and keeps a leading "//" (POSIX leaves its meaning
    open), which a container path does not. Splitting the text gives the same parts without a
    Path object per mount.
    """
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def check_mount_names(
    document: Document, mounts: list[tuple[Mount, FieldPath]], ranks: range, issues: list[ConfigIssue]
) -> None:
    """Render every network volume name for every node rank; record the first failure of each template."""
    for mount, at in mounts:
        if not isinstance(mount, NetworkMount):
            continue
        for index, template in enumerate(mount.names):
            problem = _template_problem(template, ranks)
            if problem is not None:
                text, fix = problem
                issues.append(document.issue(_name_position(document, at, index), text, value=template, fix=fix))


def _template_problem(template: str, ranks: range) -> tuple[str, str] | None:
    """Render `template` for every rank (once when it has no expression) within RENDER_TIME_LIMIT."""
    started = time.monotonic()
    try:
        varies = any(isinstance(part, Expression) for part in split_template(template))
        for rank in ranks if varies else ranks[:1]:
            rendered = render_volume_name(template, rank)
            if not is_volume_name(rendered):
                return _invalid_rendering(template, rendered, rank, varies)
            if time.monotonic() - started > RENDER_TIME_LIMIT:
                return _too_slow(rank, len(ranks))
    except TemplateError as error:
        return error.problem, error.fix
    return None


def _too_slow(rank: int, nodes: int) -> tuple[str, str]:
    return (
        f"took more than {RENDER_TIME_LIMIT:g} seconds to render for node ranks 0 to {rank} of {nodes}",
        "Simplify the expression: a plain reference such as $<< dstack.node_rank >> renders at once.",
    )


def _invalid_rendering(template: str, rendered: str, rank: int, varies: bool) -> tuple[str, str]:
    if not varies and rendered == template:
        return "is not a valid volume name", VOLUME_NAME_FIX
    problem = (
        f'renders to "{rendered}"' + (f" for node rank {rank}" if varies else "") + ", which is not a valid volume name"
    )
    fix = VOLUME_NAME_FIX
    if "${{" in rendered or "$<<" in rendered:
        fix = "$$ is an escaped $, so the expression after it stays literal text: write a single $."
    return problem, fix


def _name_position(document: Document, at: FieldPath, index: int) -> FieldPath:
    entry = lookup(document.data, at[:2])
    if isinstance(entry, dict):
        return at[:2] + (("name", index) if isinstance(entry.get("name"), list) else ("name",))
    return at[:2]
