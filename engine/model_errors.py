"""Turn pydantic validation errors into the project's error format (engine.errors.ConfigIssue)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from engine.documents import Document, FieldPath
from engine.errors import ConfigIssue
from engine.units import UnitError


class FieldProblem(ValueError):
    """A rule that spans fields, raised by a model validator and reported on `field`."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.fix = fix


class NestedProblem(UnitError):
    """A problem with one entry inside a field, such as one tag of `tags`, at `subpath` below it."""

    def __init__(self, subpath: FieldPath, value: object, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.subpath = subpath
        self.value = value


# Field names that differ between a model and the file.
_FILE_NAMES = {"size_gb": "size"}


def translate_errors(
    document: Document, data: dict[Any, Any], error: ValidationError, *, at: FieldPath = ()
) -> list[ConfigIssue]:
    """Translate every error of a model validated from `data`, found at `at` in the document."""
    return [_translate(document, data, detail, at) for detail in error.errors()]


def _translate(document: Document, data: dict[Any, Any], detail: Any, at: FieldPath) -> ConfigIssue:
    cause = (detail.get("ctx") or {}).get("error")
    path = tuple(_FILE_NAMES.get(part, part) if isinstance(part, str) else part for part in detail["loc"])

    if isinstance(cause, FieldProblem):
        field = _FILE_NAMES.get(cause.field, cause.field)
        return document.issue(
            at + (field,), cause.problem, value=data.get(field), fix=cause.fix, show_value=field in data
        )
    if isinstance(cause, NestedProblem):
        return document.issue(at + path + cause.subpath, cause.problem, value=cause.value, fix=cause.fix)
    if isinstance(cause, UnitError):
        return document.issue(at + path, cause.problem, value=lookup(data, path), fix=cause.fix)
    if detail["type"] == "missing":
        return document.issue(at + path, "is missing", fix=f"Add {path[-1]}:.", show_value=False)
    return document.issue(at + path, _plain(str(detail["msg"])), value=lookup(data, path))


def _plain(message: str) -> str:
    """pydantic's "Input should be a valid integer" reads "must be a valid integer" after a field name."""
    for prefix in ("Input should be ", "Value error, "):
        if message.startswith(prefix):
            message = ("must be " if prefix.startswith("Input") else "") + message[len(prefix) :]
    return message[:1].lower() + message[1:]


def lookup(data: Any, path: tuple[Any, ...]) -> Any:
    """Return the value at `path` inside nested mappings and lists, or None."""
    for part in path:
        found_in_mapping = isinstance(data, dict) and part in data
        found_in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (found_in_mapping or found_in_list):
            return None
        data = data[part]
    return data


def did_you_mean(value: str, options: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """Return "Did you mean X?" for the closest option, or "" when none is close."""
    matches = difflib.get_close_matches(value, sorted(options), n=1, cutoff=0.6)
    return f"Did you mean {matches[0]}?" if matches else ""
