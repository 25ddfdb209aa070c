"""cleanup: delete managed volumes unattached for longer than their auto_cleanup_duration.

The idle period is simulated by recording an earlier detach through the local provider's
Python API, never by sleeping.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from engine.cleanup import describe_seconds
from providers.base import MountSpec, NodeSpec, VolumeSpec
from providers.local import METADATA, LocalProvider
from tests.conftest import run, volume_file, write

STATE = "volplan.state.json"


def records(project: Path) -> dict[str, dict[str, Any]]:
    state = json.loads((project / STATE).read_text())
    return {record["address"]: record for record in state["resources"]}


def idle_for(provider: LocalProvider, volume_id: str, period: timedelta) -> None:
    provider.record_detached(volume_id, datetime.now(timezone.utc) - period)


def setup_volumes(project: Path) -> dict[str, str]:
    """Four managed volumes with auto_cleanup_duration 1d, one without, and one registered."""
    for name in ("old-a", "old-b", "recent", "attached"):
        volume_file(project, name, extra="auto_cleanup_duration: 1d\n")
    volume_file(project, "forever")
    made = LocalProvider().create_volume(VolumeSpec("volume.x", "ext", "aws", "eu-central-1", None, 10, {}, "l"), "t")
    write(
        project,
        "shared.dstack.yml",
        f"type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: {made.id}\n",
    )
    result = run(project, "apply", "-y")
    assert result.exit_code == 0, result.output
    return {address: record["id"] for address, record in records(project).items()}


def attach(provider: LocalProvider, volume_id: str) -> None:
    """Attach the volume to a node that no project's state records, as another tool would."""
    region = provider.read_volume(volume_id).region or "eu-central-1"
    node = NodeSpec(f"run.other-{volume_id}.node[0]", f"run.other-{volume_id}", 0, "aws", region, None, "other")
    node_id = provider.start_node(node, token=f"other-{volume_id}").id
    provider.attach_volume(MountSpec(node_id, "/data", "aws", volume_id=volume_id))


def cleanup_plan(project: Path) -> dict[str, Any]:
    result = run(project, "cleanup", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_cleanup_plans_exactly_idle_volumes(project: Path, provider: LocalProvider) -> None:
    ids = setup_volumes(project)
    for address in ("volume.old-a", "volume.old-b", "volume.forever", "volume.shared"):
        idle_for(provider, ids[address], timedelta(days=3))
    idle_for(provider, ids["volume.recent"], timedelta(hours=20))
    idle_for(provider, ids["volume.attached"], timedelta(days=3))
    attach(provider, ids["volume.attached"])

    document = cleanup_plan(project)

    deletes = [c["address"] for c in document["changes"] if c["action"] == "delete"]
    assert deletes == ["volume.old-a", "volume.old-b"]
    assert document["summary"]["delete"] == 2


def test_cleanup_reason_gives_idle_time(project: Path, provider: LocalProvider) -> None:
    ids = setup_volumes(project)
    idle_for(provider, ids["volume.old-a"], timedelta(days=3, hours=2))

    document = cleanup_plan(project)

    change = next(c for c in document["changes"] if c["address"] == "volume.old-a")
    assert change["reason"].startswith("unattached for 3d 2h, longer than its auto_cleanup_duration of 1d")
    assert "the volume (100GB) and its data will be destroyed" in change["reason"]


def test_new_volumes_are_not_idle(project: Path) -> None:
    setup_volumes(project)

    document = cleanup_plan(project)

    assert document["summary"]["delete"] == 0


def test_cleanup_deletes_idle_volumes(project: Path, provider: LocalProvider) -> None:
    ids = setup_volumes(project)
    idle_for(provider, ids["volume.old-a"], timedelta(days=2))

    result = run(project, "cleanup", "-y")

    assert result.exit_code == 0, result.output
    assert "Volumes: 1 deleted" in result.stdout
    assert "volume.old-a" not in records(project)
    assert ids["volume.old-a"] not in provider.refresh_volumes(ids.values())
    assert len(provider.refresh_volumes(ids.values())) == len(ids) - 1


def test_cleanup_skips_protected(project: Path, provider: LocalProvider) -> None:
    ids = setup_volumes(project)
    write(project, "volplan.yml", "protect:\n  - volume.old-a\n")
    idle_for(provider, ids["volume.old-a"], timedelta(days=3))
    idle_for(provider, ids["volume.old-b"], timedelta(days=3))

    result = run(project, "cleanup", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "Plan: 1 to delete." in result.stdout
    assert "volume.old-a has been unattached for 3d, longer than its auto_cleanup_duration of 1d, but protect:" in (
        result.stdout
    )


def test_cleanup_without_state(project: Path) -> None:
    result = run(project, "cleanup", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "No changes." in result.stdout


def test_cleanup_json_needs_dry_run(project: Path) -> None:
    result = run(project, "cleanup", "--json", "-y")

    assert result.exit_code == 1
    assert "--json needs --dry-run" in result.stderr


def test_detach_starts_idle_time(provider: LocalProvider, local_root: Path) -> None:
    made = provider.create_volume(VolumeSpec("volume.x", "x", "aws", "eu-central-1", None, 10, {}, "l"), "t")
    attach(provider, made.id)
    fresh = LocalProvider(local_root)
    assert fresh.read_volume(made.id).idle_since is None
    path = local_root / made.id / METADATA
    metadata = json.loads(path.read_text())
    old = (datetime.now(timezone.utc) - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps({**metadata, "created_at": old}))

    # The local provider has no detach method of its own yet, so the test empties the
    # attachments as one would: any metadata write that does so counts as the detach.
    fresh._write_metadata(made.id, {**metadata, "created_at": old, "attachments": []})

    idle_since = fresh.read_volume(made.id).idle_since
    assert idle_since is not None
    assert idle_since > old


def test_describe_seconds_two_units() -> None:
    assert describe_seconds(3 * 86400 + 2 * 3600 + 5) == "3d 2h"
    assert describe_seconds(90) == "1m 30s"
    assert describe_seconds(3600) == "1h"
    assert describe_seconds(0) == "0s"
    assert describe_seconds(8 * 86400) == "1w 1d"
