"""The AWS provider's nodes and attachments, and the strict layer's refusals, against moto."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from engine.errors import ProviderError, UsageError
from providers.aws import AwsProvider
from providers.aws_nodes import NodeSettings
from providers.aws_user_data import MOUNT_SCRIPT, user_data
from providers.base import MountSpec, NodeSpec
from tests.aws.conftest import FAST, Aws
from tests.aws.test_provider import REGION, make_raw_volumes, spec


def image(aws: Aws) -> str:
    found: str = aws.client().describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return found


def node_provider(aws: Aws) -> AwsProvider:
    return aws.provider(dataclasses.replace(FAST, nodes=NodeSettings(ami=image(aws), instance_type="t3.micro")))


def node_spec(rank: int = 0, zone: str | None = "eu-central-1a") -> NodeSpec:
    return NodeSpec(f"run.train.node[{rank}]", "run.train", rank, "aws", REGION, zone, "lineage-1")


def mount(node_id: str, volume_id: str, path: str = "/data") -> MountSpec:
    return MountSpec(node_id, path, "aws", volume_id=volume_id, region=REGION)


def attachments(aws: Aws, volume_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = aws.client().describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    return found


def refused(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return str(raised.value.response["Error"]["Code"])


def test_start_waits_for_running(aws: Aws) -> None:
    aws.strict.nodes.pending_reads = 3

    facts = node_provider(aws).start_node(node_spec(), "token-1")

    [reservation] = aws.client().describe_instances()["Reservations"]
    instance = reservation["Instances"][0]
    assert instance["State"]["Name"] == "running"
    assert facts.id == instance["InstanceId"]
    assert facts.token == "token-1"
    assert facts.availability_zone == "eu-central-1a"
    assert aws.count("DescribeInstances") >= 4


def test_start_with_same_token_starts_once(aws: Aws) -> None:
    provider = node_provider(aws)

    first = provider.start_node(node_spec(), "token-1")
    second = provider.start_node(node_spec(), "token-1")

    assert first.id == second.id
    assert provider.find_nodes_by_token(["token-1"], [REGION])["token-1"].id == first.id


def test_start_reads_ami_from_ssm(aws: Aws) -> None:
    session = aws.session()
    session.client("ssm", region_name=REGION).put_parameter(Name="/volplan/test/ami", Value=image(aws), Type="String")
    settings = NodeSettings(ami_ssm_parameter="/volplan/test/ami", instance_type="t3.micro")
    provider = AwsProvider(dataclasses.replace(FAST, nodes=settings), session=session)

    facts = provider.start_node(node_spec(), "token-1")

    [reservation] = aws.client().describe_instances(InstanceIds=[facts.id])["Reservations"]
    assert reservation["Instances"][0]["ImageId"] == image(aws)


def test_start_without_ami_names_setting(aws: Aws) -> None:
    with pytest.raises(UsageError) as raised:
        aws.provider().start_node(node_spec(), "token-1")

    assert raised.value.title == "AWS node setting missing"
    assert "providers.aws" in raised.value.detail
    assert aws.count("RunInstances") == 0


def test_attach_picks_free_devices_and_waits(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(), "token-1")
    first, second = (provider.create_volume(spec(address=f"volume.v{i}"), f"v{i}") for i in range(2))
    aws.strict.nodes.attach_reads = 3

    provider.attach_volume(mount(node.id, first.id, "/data"))
    provider.attach_volume(mount(node.id, second.id, "/cache"))

    assert [(a["Device"], a["State"]) for a in attachments(aws, first.id)] == [("/dev/sdf", "attached")]
    assert [(a["Device"], a["State"]) for a in attachments(aws, second.id)] == [("/dev/sdg", "attached")]
    mounts = provider.refresh_nodes([node.id], {node.id: REGION})[node.id].mounts
    assert {path: found.volume_id for path, found in mounts.items()} == {"/data": first.id, "/cache": second.id}


def test_attach_adopts_existing_attachment(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(), "token-1")
    created = provider.create_volume(spec(), "v")
    aws.client().attach_volume(VolumeId=created.id, InstanceId=node.id, Device="/dev/sdh")

    provider.attach_volume(mount(node.id, created.id))

    assert aws.count("AttachVolume") == 0
    assert provider.refresh_nodes([node.id], {node.id: REGION})[node.id].mounts["/data"].volume_id == created.id
    assert attachments(aws, created.id)[0]["Device"] == "/dev/sdh"


def test_attach_to_other_instance_names_it(aws: Aws) -> None:
    provider = node_provider(aws)
    holder = provider.start_node(node_spec(0), "token-0")
    other = provider.start_node(node_spec(1), "token-1")
    created = provider.create_volume(spec(), "v")
    provider.attach_volume(mount(holder.id, created.id))

    with pytest.raises(ProviderError) as raised:
        provider.attach_volume(mount(other.id, created.id))

    assert raised.value.title == "Volume in use"
    assert holder.id in raised.value.detail
    assert aws.count("AttachVolume") == 1


def test_attach_across_zones_refused_before_call(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(zone="eu-central-1b"), "token-1")
    created = provider.create_volume(spec(), "v")

    with pytest.raises(ProviderError) as raised:
        provider.attach_volume(mount(node.id, created.id))

    assert raised.value.title == "Volume in another availability zone"
    assert aws.count("AttachVolume") == 0


def test_strict_layer_refuses_as_aws(aws: Aws) -> None:
    client = aws.client()
    volumes = make_raw_volumes(3)
    image_id = image(aws)
    started = client.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "eu-central-1a"}
    )
    pending = started["Instances"][0]["InstanceId"]
    other_zone = client.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "eu-central-1b"}
    )["Instances"][0]["InstanceId"]

    assert refused(lambda: client.attach_volume(VolumeId=volumes[0], InstanceId=pending, Device="/dev/sdf")) == (
        "IncorrectState"
    )
    client.get_waiter("instance_running").wait(InstanceIds=[pending, other_zone], WaiterConfig={"Delay": 0.01})
    client.attach_volume(VolumeId=volumes[0], InstanceId=pending, Device="/dev/sdf")
    assert refused(lambda: client.attach_volume(VolumeId=volumes[0], InstanceId=pending, Device="/dev/sdg")) == (
        "VolumeInUse"
    )
    assert refused(lambda: client.attach_volume(VolumeId=volumes[1], InstanceId=pending, Device="/dev/sdf")) == (
        "InvalidParameterValue"
    )
    assert refused(lambda: client.attach_volume(VolumeId=volumes[1], InstanceId=other_zone, Device="/dev/sdf")) == (
        "InvalidVolume.ZoneMismatch"
    )
    assert refused(lambda: client.detach_volume(VolumeId=volumes[0])) == "MissingParameter"
    assert refused(lambda: client.detach_volume(VolumeId=volumes[1], InstanceId=pending)) == "IncorrectState"
    assert refused(lambda: client.detach_volume(VolumeId=volumes[0], InstanceId=other_zone)) == (
        "InvalidAttachment.NotFound"
    )

    client.stop_instances(InstanceIds=[pending])
    client.attach_volume(VolumeId=volumes[1], InstanceId=pending, Device="/dev/sdg")
    client.terminate_instances(InstanceIds=[other_zone])
    client.get_waiter("instance_terminated").wait(InstanceIds=[other_zone], WaiterConfig={"Delay": 0.01})
    ec2_backends[DEFAULT_ACCOUNT_ID][REGION].volumes[volumes[2]].zone = ec2_backends[DEFAULT_ACCOUNT_ID][
        REGION
    ].get_zone_by_name("eu-central-1b")
    assert refused(lambda: client.attach_volume(VolumeId=volumes[2], InstanceId=other_zone, Device="/dev/sdf")) == (
        "IncorrectState"
    )


def test_detach_pending_until_finished(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(), "token-1")
    created = provider.create_volume(spec(), "v")
    provider.attach_volume(mount(node.id, created.id))
    aws.strict.nodes.detach_reads = 2

    outcomes = [provider.detach_volume(mount(node.id, created.id), force=False) for _ in range(4)]

    assert outcomes == [False, False, False, True]
    assert aws.count("DetachVolume") == 1
    assert attachments(aws, created.id) == []
    assert "/data" not in provider.refresh_nodes([node.id], {node.id: REGION})[node.id].mounts


def test_held_detach_forced_only_when_asked(aws: Aws) -> None:
    session = aws.session()
    forces: list[object] = []
    session.events.register(
        "provide-client-params.ec2.DetachVolume", lambda params, **kwargs: forces.append(params["Force"])
    )
    settings = dataclasses.replace(FAST, nodes=NodeSettings(ami=image(aws), instance_type="t3.micro"))
    provider = AwsProvider(settings, session=session)
    node = provider.start_node(node_spec(), "token-1")
    created = provider.create_volume(spec(), "v")
    provider.attach_volume(mount(node.id, created.id))
    aws.strict.nodes.hold_detach(created.id)

    waiting = [provider.detach_volume(mount(node.id, created.id), force=False) for _ in range(3)]
    state = attachments(aws, created.id)[0]["State"]
    forced = provider.detach_volume(mount(node.id, created.id), force=True)

    assert waiting == [False, False, False]
    assert state == "busy"
    assert forced is True
    assert attachments(aws, created.id) == []
    assert forces == [False, True]


def test_detach_of_vanished_attachment_is_no_op(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(), "token-1")
    created = provider.create_volume(spec(), "v")
    provider.attach_volume(mount(node.id, created.id))
    provider.stop_node(node.id, REGION)

    assert provider.detach_volume(mount(node.id, created.id), force=False) is True
    assert provider.detach_volume(mount(node.id, "vol-0000000000000000f"), force=True) is True
    assert aws.count("DetachVolume") == 0


def test_detach_answered_incorrect_state_is_done(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(), "token-1")
    created = provider.create_volume(spec(), "v")
    provider.attach_volume(mount(node.id, created.id))
    aws.strict.fail("IncorrectState", f"Volume '{created.id}' is in the 'available' state.", action="DetachVolume")

    assert provider.detach_volume(mount(node.id, created.id), force=False) is True


def test_stop_terminates_and_waits(aws: Aws) -> None:
    provider = node_provider(aws)
    node = provider.start_node(node_spec(), "token-1")
    aws.strict.nodes.terminating_reads = 3

    provider.stop_node(node.id, REGION)
    provider.stop_node(node.id, REGION)

    [reservation] = aws.client().describe_instances()["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    assert aws.count("TerminateInstances") == 1
    assert provider.refresh_nodes([node.id], {node.id: REGION}) == {}


def test_refresh_volumes_and_instances_in_few_calls(aws: Aws) -> None:
    volume_ids = make_raw_volumes(1000)
    client = aws.client()
    started = client.run_instances(ImageId=image(aws), MinCount=200, MaxCount=200)["Instances"]
    instance_ids = [instance["InstanceId"] for instance in started]
    provider = aws.provider()

    volumes = provider.refresh_volumes(volume_ids, {volume_id: REGION for volume_id in volume_ids})
    nodes = provider.refresh_nodes(instance_ids, {instance_id: REGION for instance_id in instance_ids})

    assert len(volumes) == 1000
    assert len(nodes) == 200
    assert aws.count() <= 10
    assert aws.count("DescribeInstances") == 1


def test_capabilities_release_volumes_on_stop(aws: Aws) -> None:
    rules = aws.provider().capabilities("aws")

    assert rules.stop_releases_volumes is True
    assert rules.attach_per_zone is True
    assert rules.multi_attach is False


def test_user_data_is_valid_bash() -> None:
    checked = subprocess.run(["bash", "-n"], input=user_data(), text=True, capture_output=True)

    assert checked.returncode == 0, checked.stderr


# The mount script with stand-in commands: the metadata service, block devices and mount(8)
# cannot run here, so small scripts on PATH play them and log what they were asked.
STAND_INS = {
    "curl": """case "$*" in
  *api/token*) echo token ;;
  *tags/instance/volplan:mount:sdf) echo "vol-0aaa format $ROOT/data" ;;
  *tags/instance/volplan:mount:sdg) echo "vol-0bbb keep $ROOT/keep" ;;
  *tags/instance/volplan:mount:sdh) echo "vol-0ccc format $ROOT/used" ;;
  *tags/instance/) printf 'Name\\nvolplan:mount:sdf\\nvolplan:mount:sdg\\nvolplan:mount:sdh\\n' ;;
esac""",
    "blkid": 'case "$2" in *nvme1n1) exit 2 ;; *) exit 0 ;; esac',
    "mkfs.ext4": 'echo "mkfs $*" >>"$LOG"',
    "mount": 'echo "mount $*" >>"$LOG"',
    "mountpoint": 'case "$2" in *gone) exit 0 ;; *) exit 1 ;; esac',
    "umount": 'echo "umount $*" >>"$LOG"',
}


def test_mount_script_formats_only_empty_created_volumes(tmp_path: Path) -> None:
    bin_folder, devices, state, log = tmp_path / "bin", tmp_path / "dev", tmp_path / "state", tmp_path / "log"
    bin_folder.mkdir()
    for name, body in STAND_INS.items():
        (bin_folder / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_folder / name).chmod(0o755)
    (devices / "disk" / "by-id").mkdir(parents=True)
    for node in ("nvme1n1", "xvdg", "nvme3n1"):
        (devices / node).touch()
    (devices / "disk" / "by-id" / "nvme-Amazon_Elastic_Block_Store_vol0aaa").symlink_to(devices / "nvme1n1")
    (devices / "disk" / "by-id" / "nvme-Amazon_Elastic_Block_Store_vol0ccc").symlink_to(devices / "nvme3n1")
    state.mkdir()
    (state / "vol-0ddd").write_text(str(tmp_path / "gone") + "\n")
    environment = {
        **os.environ,
        "PATH": f"{bin_folder}:{os.environ['PATH']}",
        "VOLPLAN_IMDS": "http://metadata.invalid",
        "VOLPLAN_DEVICES": str(devices),
        "VOLPLAN_STATE": str(state),
        "LOG": str(log),
        "ROOT": str(tmp_path),
    }

    result = subprocess.run(["bash", "-c", MOUNT_SCRIPT], env=environment, text=True, capture_output=True)

    assert result.returncode == 0, result.stderr
    actions = log.read_text().splitlines()
    assert f"mkfs -q {devices}/nvme1n1" in actions
    assert not any("nvme3n1" in line and line.startswith("mkfs") for line in actions)
    assert not any("xvdg" in line and line.startswith("mkfs") for line in actions)
    assert f"mount {devices}/nvme1n1 {tmp_path}/data" in actions
    assert f"mount {devices}/xvdg {tmp_path}/keep" in actions
    assert f"mount {devices}/nvme3n1 {tmp_path}/used" in actions
    assert f"umount {tmp_path / 'gone'}" in actions
    assert (state / "vol-0aaa").read_text().strip() == f"{tmp_path}/data"
    assert not (state / "vol-0ddd").exists()
