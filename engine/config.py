"""Configuration models: what volplan reads from `*.dstack.yml` files.

Volume configurations are modelled in full. Run configurations keep every key dstack accepts
as it is; the volume-related fields are read by the resolver.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.documents import Document, describe_value
from engine.dstack_keys import BACKENDS, CONFIGURATION_TYPES, RUN_KEYS, VOLUME_FIELDS
from engine.errors import ConfigIssue
from engine.run_config import RunConfiguration, parse_run
from engine.units import UnitError, parse_duration, parse_size_gb

VOLUME_NAME = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
TEMPLATE_MARKERS = ("$<<", "${{")


class VolumeConfiguration(BaseModel):
    """A `type: volume` configuration: a network volume to create, or an existing one to register."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["volume"]
    name: str
    backend: str
    region: str | None = None
    availability_zone: str | None = None
    size_gb: int | None = Field(default=None, alias="size")
    volume_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    auto_cleanup_duration: int | None = None
    # kubernetes
    claim_name: str | None = None
    storage_class_name: str | None = None
    access_modes: list[str] | None = None
    read_only: bool | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: object) -> object:
        if not isinstance(value, str):
            raise UnitError("must be a string", "Write a name such as my-volume.")
        if any(marker in value for marker in TEMPLATE_MARKERS):
            raise UnitError(
                "is a template, but a volume configuration needs one fixed name",
                "Templates such as $<< dstack.node_rank >> belong in a run's volumes:; "
                "write one volume file per rendered name, or use apply -n NAME.",
            )
        if not VOLUME_NAME.match(value):
            raise UnitError(
                "is not a valid volume name",
                "Use 2 to 41 characters: a lowercase letter first, then lowercase letters, digits or '-'.",
            )
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _check_backend(cls, value: object) -> object:
        if not isinstance(value, str) or value not in BACKENDS:
            hint = _did_you_mean(str(value), BACKENDS)
            raise UnitError("is not a dstack backend", hint or f"Use one of: {', '.join(sorted(VOLUME_FIELDS))}.")
        if value not in VOLUME_FIELDS:
            raise UnitError(
                "has no network volumes in dstack",
                f"Use one of: {', '.join(sorted(VOLUME_FIELDS))}.",
            )
        return value

    @field_validator("region", "availability_zone", "volume_id", "claim_name", "storage_class_name", mode="before")
    @classmethod
    def _check_text(cls, value: object) -> object:
        if value is not None and not isinstance(value, str):
            raise UnitError("must be a string", "Quote the value.")
        return value

    @field_validator("size_gb", mode="before")
    @classmethod
    def _check_size(cls, value: object) -> object:
        return None if value is None else parse_size_gb(value)

    @field_validator("auto_cleanup_duration", mode="before")
    @classmethod
    def _check_cleanup(cls, value: object) -> object:
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds is not None and seconds <= 0:
            return None
        return seconds

    @field_validator("tags", mode="before")
    @classmethod
    def _check_tags(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UnitError("must be a mapping of tag names to values", "Write tags: {team: ml}.")
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise UnitError(
                    f"has the non-string entry {describe_value(key)}: {describe_value(item)}",
                    'Quote tag names and values, for example "1" instead of 1.',
                )
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> VolumeConfiguration:
        has_size_field = "size" in VOLUME_FIELDS[self.backend]
        existing = self.volume_id or self.claim_name
        if has_size_field and self.size_gb is None and not existing:
            raise _FieldProblem(
                "size",
                "is missing: a new volume needs a size, an existing one its volume_id",
                "Add size: 100GB, or volume_id: of the volume to register.",
            )
        # dstack 0.22.5 needs no region for these backends' volumes.
        if self.backend not in ("daytona", "lium", "kubernetes") and self.region is None:
            raise _FieldProblem("region", "is missing", f"Add the {self.backend} region, such as region: eu-central-1.")
        if existing and self.auto_cleanup_duration is not None:
            raise _FieldProblem(
                "auto_cleanup_duration",
                "is set on an external volume, which volplan never deletes",
                "Remove it, or set it to off.",
            )
        return self

    @property
    def external(self) -> bool:
        return bool(self.volume_id or self.claim_name)


class _FieldProblem(ValueError):
    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.fix = fix


def _did_you_mean(value: str, options: frozenset[str] | set[str]) -> str:
    matches = difflib.get_close_matches(value, sorted(options), n=1, cutoff=0.6)
    return f"Did you mean {matches[0]}?" if matches else ""


def parse_configuration(document: Document) -> tuple[VolumeConfiguration | RunConfiguration | None, list[ConfigIssue]]:
    """Validate one document as a volume or run configuration, collecting every issue."""
    data = document.data
    if not isinstance(data, dict):
        return None, [
            document.issue((), "is not a mapping of configuration keys", fix="Start the file with type: volume.")
        ]

    kind = data.get("type")
    if kind is None:
        return None, [document.issue((), "has no type: key", fix="Add type: volume, task, service or dev-environment.")]
    if kind not in CONFIGURATION_TYPES:
        hint = _did_you_mean(str(kind), set(CONFIGURATION_TYPES))
        return None, [document.issue(("type",), "is not a configuration type", value=kind, fix=hint)]
    if kind in ("fleet", "gateway"):
        return None, []

    allowed = VOLUME_FIELDS.get(str(data.get("backend")), _all_volume_fields()) if kind == "volume" else RUN_KEYS[kind]
    issues = _unknown_keys(document, data, allowed, str(kind))

    if kind == "volume":
        volume, model_issues = _parse_volume(document, data)
        return (volume if not issues and not model_issues else None), issues + model_issues

    run, run_issues = parse_run(document, data, str(kind))
    return (run if not issues else None), issues + run_issues


def _all_volume_fields() -> frozenset[str]:
    return frozenset().union(*VOLUME_FIELDS.values())


def _unknown_keys(document: Document, data: dict[Any, Any], allowed: frozenset[str], kind: str) -> list[ConfigIssue]:
    issues = []
    for key in data:
        if key in allowed:
            continue
        hint = _did_you_mean(str(key), allowed)
        issues.append(
            document.issue(
                (str(key),),
                f"is not a field of a {kind} configuration"
                + (f" on backend {data.get('backend')}" if kind == "volume" else ""),
                fix=hint or "Remove it.",
                key=True,
                show_value=False,
            )
        )
    return issues


def _parse_volume(document: Document, data: dict[Any, Any]) -> tuple[VolumeConfiguration | None, list[ConfigIssue]]:
    known = {key: value for key, value in data.items() if key in _all_volume_fields()}
    try:
        return VolumeConfiguration.model_validate(known), []
    except ValidationError as error:
        return None, [_translate(document, data, detail) for detail in error.errors()]


def _translate(document: Document, data: dict[Any, Any], detail: Any) -> ConfigIssue:
    """Turn one pydantic error into the project's error format."""
    cause = (detail.get("ctx") or {}).get("error")
    path = tuple(detail["loc"])
    if path and path[0] == "size_gb":
        path = ("size",) + path[1:]

    if isinstance(cause, _FieldProblem):
        return document.issue(
            (cause.field,), cause.problem, value=data.get(cause.field), fix=cause.fix, show_value=cause.field in data
        )
    if isinstance(cause, UnitError):
        return document.issue(path, cause.problem, value=_lookup(data, path), fix=cause.fix)
    if detail["type"] == "missing":
        return document.issue(path, "is missing", fix=f"Add {path[-1]}:.", show_value=False)
    if detail["type"] == "literal_error":
        return document.issue(path, "must be volume", value=_lookup(data, path))
    return document.issue(path, detail["msg"].lower(), value=_lookup(data, path))


def _lookup(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if (
            isinstance(data, dict)
            and part in data
            or isinstance(data, list)
            and isinstance(part, int)
            and part < len(data)
        ):
            data = data[part]
        else:
            return None
    return data
