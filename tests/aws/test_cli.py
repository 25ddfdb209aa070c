"""volplan with the AWS provider, end to end through the CLI, against the strict moto server.

The server runs in the test process. `volplan` runs either in-process or as a real subprocess,
which reaches the server through AWS_ENDPOINT_URL like any boto3 program.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.workflow import refresh
from providers.registry import ProviderSet
from state.model import State
from tests.aws.conftest import Aws
from tests.aws.test_provider import attach_to_new_instance, make_raw_volumes
from tests.conftest import run, run_process, volume_file, write

STATE = "volplan.state.json"

# The volume from dstack's volume documentation, as it appears there.
DOCUMENTATION_VOLUME = """\
type: volume
# A name of the volume
name: my-volume

# Volumes are bound to a specific backend and region
backend: aws
region: eu-central-1

# Required size
size: 100GB
"""

# Short polls, so that a test waits seconds for a creating volume instead of minutes.
SETTINGS = "providers:\n  aws:\n    kind: aws\n    poll_interval: 1s\n    create_timeout: 60s\n"


def read_state(project: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((project / STATE).read_text())
    return state


def records(project: Path) -> dict[str, dict[str, Any]]:
    return {record["address"]: record for record in read_state(project)["resources"]}


def server_volumes(aws: Aws) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = aws.client().describe_volumes()["Volumes"]
    return volumes


def tags_of(volume: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in volume.get("Tags", [])}


def aws_project(aws: Aws, project: Path) -> Path:
    """Serve backend aws with the AWS provider; new volumes are available at once, to keep tests short."""
    write(project, "volplan.yml", SETTINGS)
    aws.strict.creating_reads = 0
    return project


def test_documentation_volume_applied(aws: Aws, project: Path) -> None:
    (project / "my-volume.dstack.yml").write_text(DOCUMENTATION_VOLUME)

    applied = run_process(project, "apply", "--provider", "aws=aws", "--auto-approve")
    planned = run_process(project, "plan", "--provider", "aws=aws", "--detailed-exitcode")

    assert applied.returncode == 0, applied.stderr
    [volume] = server_volumes(aws)
    assert tags_of(volume)["Name"] == "my-volume"
    assert volume["Size"] == 100
    assert volume["VolumeType"] == "gp3"
    record = records(project)["volume.my-volume"]
    assert record["id"] == volume["VolumeId"]
    assert record["availability_zone"] == volume["AvailabilityZone"] == "eu-central-1a"
    assert record["provider"] == "aws"
    assert record["tags"] == {}
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "No changes." in planned.stdout


def test_crash_during_create_is_recovered(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    volume_file(project, "data")
    aws.strict.creating_reads = 1_000_000

    # The apply makes the volume and waits for it to become available, and is killed while waiting.
    child = subprocess.Popen(
        [sys.executable, "-m", "engine", "apply", "--auto-approve"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while aws.strict.count("CreateVolume") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        while aws.strict.count("DescribeVolumes") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert aws.strict.count("CreateVolume") == 1
    assert not (project / STATE).exists() or "volume.data" not in records(project)

    planned = run(project, "plan")
    recovered = run(project, "apply", "--auto-approve")

    assert planned.exit_code == 0, planned.output
    assert "adopted volume" in planned.output
    assert recovered.exit_code == 0, recovered.output
    [volume] = server_volumes(aws)
    assert records(project)["volume.data"]["id"] == volume["VolumeId"]
    assert aws.strict.count("CreateVolume") == 1


def test_registered_volume_survives_file_removal(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    outside = aws.client().create_volume(
        AvailabilityZone="eu-central-1b",
        Size=30,
        VolumeType="io2",
        Iops=1000,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "owner", "Value": "ops"}]}],
    )["VolumeId"]
    config = f"type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: {outside}\n"
    write(project, "shared.dstack.yml", config + "tags:\n  team: ml\n")

    registered = run(project, "apply", "--auto-approve")

    assert registered.exit_code == 0, registered.output
    assert "must already carry a file system" in registered.output
    record = records(project)["volume.shared"]
    assert record["external"] is True
    assert (record["size_gb"], record["availability_zone"], record["volume_type"]) == (30, "eu-central-1b", "io2")
    assert record["tags"] == {"owner": "ops"}

    (project / "shared.dstack.yml").unlink()
    deregistered = run(project, "apply", "--auto-approve")

    assert deregistered.exit_code == 0, deregistered.output
    assert "volume.shared" not in records(project)
    [volume] = server_volumes(aws)
    assert volume["VolumeId"] == outside
    assert tags_of(volume) == {"owner": "ops"}
    for action in ("CreateTags", "DeleteTags", "ModifyVolume", "DeleteVolume"):
        assert aws.strict.count(action) == 0, action


def test_register_of_missing_volume_is_plan_error(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    write(
        project,
        "shared.dstack.yml",
        "type: volume\nname: shared\nbackend: aws\nregion: eu-central-1\nvolume_id: vol-0123456789abcdef0\n",
    )

    planned = run(project, "plan")

    assert planned.exit_code == 1
    assert "vol-0123456789abcdef0 does not exist" in planned.output


def test_grow_and_retag(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    volume_file(project, "data", extra="tags:\n  team: ml\n  stage: dev\n")
    assert run(project, "apply", "-y").exit_code == 0
    volume_file(project, "data", size="200GB", extra="tags:\n  team: research\n")

    applied = run(project, "apply", "-y")
    planned = run(project, "plan", "--detailed-exitcode")

    assert applied.exit_code == 0, applied.output
    [volume] = server_volumes(aws)
    assert volume["Size"] == 200
    tags = tags_of(volume)
    assert tags["team"] == "research"
    assert "stage" not in tags
    assert tags["Name"] == "data"
    assert records(project)["volume.data"]["size_gb"] == 200
    assert records(project)["volume.data"]["tags"] == {"team": "research"}
    assert (aws.strict.count("ModifyVolume"), aws.strict.count("CreateTags"), aws.strict.count("DeleteTags")) == (
        1,
        1,
        1,
    )
    assert planned.exit_code == 0, planned.output


def test_shrink_refused_without_aws_call(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_file(project, "data", size="50GB")

    applied = run(project, "apply", "-y")

    assert applied.exit_code == 1
    assert "volumes only grow" in applied.output
    assert aws.strict.count("ModifyVolume") == 0
    assert server_volumes(aws)[0]["Size"] == 100


def test_delete_while_attached_refused(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    volume_file(project, "data")
    run(project, "apply", "-y")
    volume_id = records(project)["volume.data"]["id"]
    instance_id = attach_to_new_instance(aws, volume_id)
    (project / "data.dstack.yml").unlink()

    applied = run(project, "apply", "-y")

    assert applied.exit_code == 1
    assert "Volume in use" in applied.output
    assert instance_id in applied.output
    assert records(project)["volume.data"]["id"] == volume_id
    assert aws.strict.count("DeleteVolume") == 0


def test_delete_of_vanished_volume(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    volume_file(project, "data")
    volume_file(project, "logs")
    run(project, "apply", "-y")
    vanished = records(project)["volume.data"]["id"]
    aws.client().delete_volume(VolumeId=vanished)
    (project / "data.dstack.yml").unlink()
    (project / "logs.dstack.yml").unlink()

    applied = run(project, "apply", "-y")

    assert applied.exit_code == 0, applied.output
    assert "already deleted outside volplan" in applied.output
    assert records(project) == {}
    assert server_volumes(aws) == []
    assert aws.strict.count("DeleteVolume") == 2


def test_volumes_made_outside_are_ignored(aws: Aws, project: Path) -> None:
    aws_project(aws, project)
    aws.client().create_volume(AvailabilityZone="eu-central-1a", Size=10)
    volume_file(project, "data")
    run(project, "apply", "-y")

    planned = run(project, "plan", "--json")

    changes = json.loads(planned.stdout)["changes"]
    assert [change["address"] for change in changes] == ["volume.data"]
    assert len(server_volumes(aws)) == 2


def test_provider_flag_overrides_settings_kind(aws: Aws, project: Path) -> None:
    write(project, "volplan.yml", "providers:\n  aws:\n    kind: local\n")
    volume_file(project, "data")
    aws.strict.creating_reads = 0

    applied = run(project, "--provider", "aws=aws", "apply", "-y")

    assert applied.exit_code == 0, applied.output
    assert records(project)["volume.data"]["provider"] == "aws"
    assert len(server_volumes(aws)) == 1


def test_invalid_setting_is_one_clear_error(aws: Aws, project: Path) -> None:
    write(project, "volplan.yml", "providers:\n  aws:\n    kind: aws\n    retry_mode: eager\n")
    volume_file(project, "data")

    planned = run(project, "apply", "-y")

    assert planned.exit_code == 1
    assert "providers.aws.retry_mode" in planned.output
    assert "adaptive" in planned.output
    assert "Traceback" not in planned.output
    assert server_volumes(aws) == []


def test_plan_refresh_of_thousand_volumes(aws: Aws) -> None:
    ids = make_raw_volumes(1000)
    state = State.new()
    for index, volume_id in enumerate(ids):
        address = f"volume.v{index:04d}"
        state.resources[address] = {
            "address": address,
            "kind": "volume",
            "id": volume_id,
            "backend": "aws",
            "region": "eu-central-1",
            "provider": "aws",
        }
    provider = aws.provider()
    providers = ProviderSet(kinds={"aws": "aws"}, factory=lambda kind, options: provider)

    facts = refresh(state, providers)

    assert sum(1 for value in facts.values() if value is not None) == 1000
    assert len(aws.calls) <= 6
    assert set(aws.calls) == {"DescribeVolumes"}
