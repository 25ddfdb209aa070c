"""The state's location, read from volplan.yml's `state:` section and `--state`, and the store it opens.

```yaml
state:
  backend: s3                 # or local (the default)
  bucket: team-state
  key: prod/volplan.state.json
  region: eu-central-1        # optional: else boto3's chain (AWS_DEFAULT_REGION, ~/.aws/config)
  endpoint_url: https://...   # optional: else boto3's chain (AWS_ENDPOINT_URL)
  lock_lease: 60s             # optional: how long a crashed command's lock outlives it
```

`--state PATH` or `--state s3://BUCKET/KEY` overrides where the state is; an S3 URL keeps the
region, endpoint and lease of an S3 `state:` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.documents import Document
from engine.errors import ConfigIssue
from engine.units import UnitError, parse_duration
from state.lease_lock import DEFAULT_LEASE_SECONDS
from state.s3_location import S3Location, is_s3_url, parse_s3_url
from state.storage import StateStore
from state.store import LocalStateStore

STATE_FILE = "volplan.state.json"
BACKENDS = ("local", "s3")
# A lease renewed every third of its length needs a few seconds to outlast a slow request.
MIN_LOCK_LEASE_SECONDS = 3
_S3_ONLY = ("bucket", "key", "region", "endpoint_url", "lock_lease")
_KEYS = ("backend", "path", *_S3_ONLY)


@dataclass(frozen=True)
class StateSettings:
    backend: str = "local"
    path: str | None = None
    bucket: str | None = None
    key: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    lock_lease: float = DEFAULT_LEASE_SECONDS


def read_state_settings(document: Document, value: dict[str, Any], issues: list[ConfigIssue]) -> StateSettings:
    """Check volplan.yml's `state:` mapping; every problem is added to `issues`."""
    count = len(issues)
    for key in value:
        if key not in _KEYS:
            issues.append(
                document.issue(
                    ("state", str(key)),
                    "is not a state setting",
                    key=True,
                    show_value=False,
                    fix=f"Use {', '.join(_KEYS)}.",
                )
            )
    strings = {name: _string(document, value, name, issues) for name in ("backend", "path", *_S3_ONLY[:4])}
    backend = strings["backend"] or "local"
    if backend not in BACKENDS:
        issues.append(
            document.issue(("state", "backend"), "is not a state backend", value=backend, fix="Use local or s3.")
        )
    lease = _lease(document, value, issues)

    if backend == "s3":
        _require_s3_fields(document, value, issues)
    elif backend == "local":
        _reject_s3_fields(document, value, issues)
    if len(issues) > count:
        return StateSettings()
    return StateSettings(
        backend,
        strings["path"],
        strings["bucket"],
        strings["key"],
        strings["region"],
        strings["endpoint_url"],
        lease if lease is not None else DEFAULT_LEASE_SECONDS,
    )


def _string(document: Document, value: dict[str, Any], name: str, issues: list[ConfigIssue]) -> str | None:
    found = value.get(name)
    if found is None or (isinstance(found, str) and found):
        return found
    issues.append(
        document.issue(("state", name), "must be a non-empty string", value=found, fix=f"Write {name}: as text.")
    )
    return None


def _lease(document: Document, value: dict[str, Any], issues: list[ConfigIssue]) -> float | None:
    if "lock_lease" not in value:
        return None
    found = value["lock_lease"]
    try:
        seconds = parse_duration(found, allow_off=False)
    except UnitError as error:
        issues.append(document.issue(("state", "lock_lease"), error.problem, value=found, fix=error.fix))
        return None
    if seconds is None or seconds < MIN_LOCK_LEASE_SECONDS:
        issues.append(
            document.issue(
                ("state", "lock_lease"),
                f"must be at least {MIN_LOCK_LEASE_SECONDS} seconds",
                value=found,
                fix="Write a duration such as 60s or 5m.",
            )
        )
        return None
    return float(seconds)


def _require_s3_fields(document: Document, value: dict[str, Any], issues: list[ConfigIssue]) -> None:
    for name in ("bucket", "key"):
        if name not in value:
            issues.append(
                document.issue(
                    ("state",),
                    f"needs {name}: for backend: s3",
                    show_value=False,
                    fix="Write state: {backend: s3, bucket: team-state, key: prod/volplan.state.json}.",
                )
            )
    if "path" in value:
        issues.append(
            document.issue(
                ("state", "path"),
                "applies only to backend: local",
                show_value=False,
                fix="Remove path:, or write key: for the state object's key.",
            )
        )


def _reject_s3_fields(document: Document, value: dict[str, Any], issues: list[ConfigIssue]) -> None:
    for name in _S3_ONLY:
        if name in value:
            issues.append(
                document.issue(
                    ("state", name),
                    "applies only to backend: s3",
                    show_value=False,
                    fix="Add backend: s3, or remove it.",
                )
            )


def open_state_store(root: Path, flag: str | None, settings: StateSettings) -> StateStore:
    """Open the store that `--state` (when given) or the settings name."""
    location = _s3_location(flag, settings)
    if location is not None:
        # Imported here, so that commands on a local state never load boto3.
        from state.s3_store import open_s3_store

        return open_s3_store(location, root, settings.lock_lease)

    path = Path(flag or settings.path or STATE_FILE)
    if flag and not path.is_absolute():
        path = Path.cwd() / path
    elif not path.is_absolute():
        path = root / path
    return LocalStateStore(path)


def _s3_location(flag: str | None, settings: StateSettings) -> S3Location | None:
    if flag is not None and not is_s3_url(flag):
        return None
    if flag is not None:
        parsed = parse_s3_url(flag)
        return S3Location(parsed.bucket, parsed.key, settings.region, settings.endpoint_url)
    if settings.backend == "s3":
        assert settings.bucket is not None and settings.key is not None
        return S3Location(settings.bucket, settings.key, settings.region, settings.endpoint_url)
    return None
