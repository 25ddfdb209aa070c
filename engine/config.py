"""Read one configuration document as a volume or run configuration.

This module picks the model by `type:` (and, for volumes, by `backend:`), rejects keys dstack
does not accept for that type with a "did you mean" hint, and turns every pydantic error into the
project's error format (engine.errors.ConfigIssue).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from engine.documents import Document
from engine.dstack_keys import BACKENDS, CONFIGURATION_TYPES, RUN_KEYS, VOLUME_FIELDS
from engine.errors import ConfigIssue
from engine.model_errors import did_you_mean, translate_errors
from engine.run_config import RunConfiguration, parse_run
from engine.volume_config import VOLUME_MODELS, VolumeConfiguration

__all__ = ["VolumeConfiguration", "parse_configuration", "did_you_mean"]

# Configuration types dstack accepts that volplan does not manage; their files are skipped.
SKIPPED_TYPES = ("fleet", "gateway")
_REGION_EXAMPLES = {"aws": "eu-central-1", "gcp": "europe-west4", "runpod": "EU-SE-1"}


def parse_configuration(document: Document) -> tuple[VolumeConfiguration | RunConfiguration | None, list[ConfigIssue]]:
    """Validate one document as a volume or run configuration, collecting every issue."""
    data = document.data
    if not isinstance(data, dict):
        return None, [
            document.issue((), "is not a mapping of configuration keys", fix="Start the file with type: volume.")
        ]

    kind = data.get("type")
    if kind is None:
        return None, [
            document.issue(
                ("type",), "is missing", fix="Add type: volume, task, service or dev-environment.", show_value=False
            )
        ]
    if not isinstance(kind, str) or kind not in CONFIGURATION_TYPES:
        hint = did_you_mean(str(kind), CONFIGURATION_TYPES)
        return None, [
            document.issue(
                ("type",),
                "is not a configuration type",
                value=kind,
                fix=hint or "Use volume, task, service or dev-environment.",
            )
        ]
    if kind in SKIPPED_TYPES:
        return None, []

    if kind == "volume":
        return _parse_volume(document, data)

    issues = _unknown_keys(document, data, RUN_KEYS[kind], f"a {kind} configuration")
    run, run_issues = parse_run(document, data, kind)
    return (run if not issues else None), issues + run_issues


def _parse_volume(document: Document, data: dict[Any, Any]) -> tuple[VolumeConfiguration | None, list[ConfigIssue]]:
    backend = data.get("backend")
    model = VOLUME_MODELS.get(backend) if isinstance(backend, str) else None
    allowed = model.FIELDS if model else frozenset().union(*VOLUME_FIELDS.values())
    where = f"a volume configuration on backend {backend}" if model else "a volume configuration"
    issues = _unknown_keys(document, data, allowed, where)

    if model is None:
        issues.append(_backend_issue(document, data))
        return None, issues

    # Without unknown keys (the usual case) every key is known, and validating reads `data` as is.
    known = {key: value for key, value in data.items() if key in allowed} if issues else data
    try:
        volume = model.model_validate(known)
    except ValidationError as error:
        return None, issues + _volume_issues(document, data, error)
    return (volume if not issues else None), issues


def _backend_issue(document: Document, data: dict[Any, Any]) -> ConfigIssue:
    with_volumes = ", ".join(sorted(VOLUME_MODELS))
    if "backend" not in data:
        return document.issue(
            ("backend",), "is missing", fix=f"Add backend: with one of {with_volumes}.", show_value=False
        )
    backend = data["backend"]
    if isinstance(backend, str) and backend in BACKENDS:
        return document.issue(
            ("backend",), "has no network volumes in dstack", value=backend, fix=f"Use one of: {with_volumes}."
        )
    hint = did_you_mean(str(backend), BACKENDS)
    return document.issue(
        ("backend",), "is not a dstack backend", value=backend, fix=hint or f"Use one of: {with_volumes}."
    )


def _unknown_keys(document: Document, data: dict[Any, Any], allowed: frozenset[str], where: str) -> list[ConfigIssue]:
    issues = []
    for key in data:
        if key in allowed:
            continue
        hint = did_you_mean(str(key), allowed)
        issues.append(
            document.issue(
                (str(key),),
                f"is not a field of {where}",
                fix=hint or "Remove it.",
                key=True,
                show_value=False,
            )
        )
    return issues


def _volume_issues(document: Document, data: dict[Any, Any], error: ValidationError) -> list[ConfigIssue]:
    """Translate a volume model's errors, explaining the required fields in volplan's words."""
    issues = []
    for detail, issue in zip(error.errors(), translate_errors(document, data, error), strict=True):
        if detail["type"] == "missing":
            issue = _missing_issue(document, data, issue.field)
        elif detail["type"] == "literal_error":
            issue = document.issue(("type",), "must be volume", value=data.get("type"), fix="Write type: volume.")
        issues.append(issue)
    return issues


def _missing_issue(document: Document, data: dict[Any, Any], field: str) -> ConfigIssue:
    path = (field,)
    if field == "name":
        return document.issue(
            path,
            "is missing: volplan tracks each volume by its name, so it must be stable (dstack would invent one)",
            fix="Add name: my-volume.",
            show_value=False,
        )
    if field == "region":
        backend = data.get("backend")
        example = _REGION_EXAMPLES.get(str(backend), "my-region")
        return document.issue(
            path, f"is missing: a {backend} volume lives in one region", fix=f"Add region: {example}.", show_value=False
        )
    return document.issue(path, "is missing", fix=f"Add {field}:.", show_value=False)
