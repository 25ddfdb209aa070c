"""Run nodes on AWS: EC2 instances, and the attachments of EBS volumes to them.

A node is an instance that RunInstances starts in the availability zone placement chose, with
the ClientToken derived from the start's idempotency token and these tags:

    Name              the node's address, such as run.train.node[0]
    volplan:address   the same address
    volplan:lineage   the lineage of the state that manages it
    volplan:token     the start's idempotency token, which crash recovery searches for
    volplan:mount:sdf one per attachment: "<volume id> <format|keep> <mount path>", read by the
                      mount service that the user data installs (see providers/aws_user_data.py)

A start returns once the instance is `running`, because AWS rejects an attachment to a pending
instance. A stop terminates the instance and waits for `terminated`, which releases its
volumes. An attach returns once the attachment itself is `attached`, not merely the volume
`in-use` (it is in-use while still attaching). A detach returns True once the volume has left
the instance, and False while AWS still reports the attachment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from engine.errors import ProviderError, UsageError
from engine.units import UnitError, parse_duration
from providers.aws_errors import aws_call
from providers.aws_user_data import mount_tag, parse_mount_tag, user_data
from providers.base import MountFacts, MountSpec, NodeFacts, NodeSpec

log = logging.getLogger(__name__)

ADDRESS_TAG = "volplan:address"
LINEAGE_TAG = "volplan:lineage"
TOKEN_TAG = "volplan:token"

# The device names AWS recommends for EBS data volumes on Linux instances.
DEVICE_NAMES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")
# Instance states in which the instance is gone or going: a node in them no longer exists.
GONE_STATES = frozenset({"shutting-down", "terminated"})
# Error codes of DetachVolume that mean the volume is no longer attached to the instance.
DETACHED_CODES = frozenset({"IncorrectState", "InvalidAttachment.NotFound", "InvalidVolume.NotFound"})
INSTANCE_GONE_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})

# AWS accepts at most 200 values in one filter; DescribeInstances returns at most 1,000 per page.
FILTER_VALUES_MAX = 200
INSTANCE_PAGE_SIZE = 1000


@dataclass(frozen=True)
class NodeSettings:
    """The options of run nodes under `providers: {aws: ...}` in volplan.yml."""

    ami: str | None = None
    ami_ssm_parameter: str | None = None
    instance_type: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    # Seconds to wait for an instance to become running or terminated.
    start_timeout: float = 600
    # Seconds to wait for an attachment to become attached, or for a forced detach to finish.
    attach_timeout: float = 300

    OPTIONS = (
        "ami",
        "ami_ssm_parameter",
        "instance_type",
        "subnet_id",
        "security_group_ids",
        "key_name",
        "start_timeout",
        "attach_timeout",
    )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> NodeSettings:
        texts = {name: _text_option(options, name) for name in ("ami", "ami_ssm_parameter", "instance_type")}
        if texts["ami"] and texts["ami_ssm_parameter"]:
            raise invalid_option(
                "ami_ssm_parameter", options["ami_ssm_parameter"], "set either ami or ami_ssm_parameter"
            )
        groups = options.get("security_group_ids", [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(group, str) and group for group in groups):
            raise invalid_option("security_group_ids", groups, "use a list of security group ids, such as [sg-0abc]")
        defaults = cls()
        return cls(
            ami=texts["ami"],
            ami_ssm_parameter=texts["ami_ssm_parameter"],
            instance_type=texts["instance_type"],
            subnet_id=_text_option(options, "subnet_id"),
            security_group_ids=tuple(groups),
            key_name=_text_option(options, "key_name"),
            start_timeout=duration_option(options, "start_timeout", defaults.start_timeout),
            attach_timeout=duration_option(options, "attach_timeout", defaults.attach_timeout),
        )


def _text_option(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid_option(name, value, "use a non-empty string")
    return value.strip()


def duration_option(options: Mapping[str, Any], name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        seconds = parse_duration(options[name], allow_off=False)
    except UnitError as error:
        raise invalid_option(name, options[name], error.fix) from None
    if seconds is None or seconds < 1:
        raise invalid_option(name, options[name], "use a duration of at least 1s, such as 5s or 10m")
    return float(seconds)


def invalid_option(name: str, value: object, fix: str) -> UsageError:
    return UsageError(
        "Invalid AWS provider setting", f"volplan.yml: providers.aws.{name}: {value!s} is not valid; {fix}."
    )


Client = Callable[[str], Any]
VolumeReader = Callable[[str, str], "dict[str, Any] | None"]


class AwsNodes:
    """Instances and attachments for the AWS provider. Thread-safe."""

    def __init__(
        self,
        settings: NodeSettings,
        poll_interval: float,
        ec2: Client,
        ssm: Client,
        read_volume: VolumeReader,
        first_zone: Callable[[str, str], str],
    ) -> None:
        self.settings = settings
        self.poll_interval = poll_interval
        self._ec2 = ec2
        self._ssm = ssm
        self._read_volume = read_volume
        self._first_zone = first_zone
        self._lock = threading.Lock()
        # One lock per instance, so that two attaches to one instance never pick one device name.
        self._instance_locks: dict[str, threading.Lock] = {}

    # Nodes

    def start(self, spec: NodeSpec, token: str, client_token: str) -> NodeFacts:
        region = spec.region
        image = self._image(region, spec.address)
        instance_type = self._required("instance_type", self.settings.instance_type, spec.address)
        request: dict[str, Any] = {
            "ImageId": image,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token,
            "UserData": user_data(),
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": _node_tags(spec, token)}],
        }
        request.update(self._network(spec))

        log.debug("starting an EC2 instance for %s in %s with token %s", spec.address, region, token)
        with aws_call("RunInstances", spec.address, region):
            response = self._ec2(region).run_instances(**request)
        instance_id = response["Instances"][0]["InstanceId"]
        log.info("started %s for %s; waiting until it is running", instance_id, spec.address)

        instance = self._wait_instance(region, instance_id, spec.address, "running")
        return _node_facts(instance, region)

    def stop(self, node_id: str, region: str) -> None:
        instance = self._describe_instance(region, node_id)
        if instance is None or instance["State"]["Name"] == "terminated":
            log.info("stop of %s in %s: already terminated", node_id, region)
            return

        log.debug("terminating %s in %s", node_id, region)
        try:
            with aws_call("TerminateInstances", node_id, region):
                self._ec2(region).terminate_instances(InstanceIds=[node_id])
        except ProviderError as error:
            if _code(error) in INSTANCE_GONE_CODES:
                return
            raise
        self._wait_instance(region, node_id, node_id, "terminated")
        log.info("terminated %s in %s", node_id, region)

    def refresh(self, node_ids: Iterable[str], regions: Mapping[str, str]) -> dict[str, NodeFacts]:
        by_region: dict[str, list[str]] = {}
        for node_id in sorted(set(node_ids)):
            by_region.setdefault(regions[node_id], []).append(node_id)

        found: dict[str, NodeFacts] = {}
        for region, ids in sorted(by_region.items()):
            for instance in self._describe(region, "instance-id", ids, f"{len(ids)} instances"):
                if instance["State"]["Name"] not in GONE_STATES:
                    found[instance["InstanceId"]] = _node_facts(instance, region)
        requested = sum(len(ids) for ids in by_region.values())
        log.debug("refreshed %d EC2 instances in %d regions, %d found", requested, len(by_region), len(found))
        return found

    def find_by_token(self, tokens: Iterable[str], regions: Iterable[str]) -> dict[str, NodeFacts]:
        wanted = sorted(set(tokens))
        found: dict[str, NodeFacts] = {}
        if not wanted:
            return found
        for region in sorted(set(regions)):
            for instance in self._describe(region, f"tag:{TOKEN_TAG}", wanted, f"{len(wanted)} interrupted starts"):
                if instance["State"]["Name"] in GONE_STATES:
                    continue
                facts = _node_facts(instance, region)
                if facts.token is not None:
                    found[facts.token] = facts
        return found

    # Attachments

    def attach(self, mount: MountSpec, region: str) -> None:
        volume_id = _network_volume(mount)
        with self._instance_lock(mount.node_id):
            instance = self._require_instance(region, mount.node_id, mount.path)
            volume = self._require_volume(region, volume_id, mount)
            attachment = _attachment(volume)

            if attachment is not None and attachment["InstanceId"] != mount.node_id:
                raise ProviderError(
                    "Volume in use",
                    f"cannot attach {volume_id} at {mount.path} on {mount.node_id}: it is attached to instance "
                    f"{attachment['InstanceId']} (state {attachment.get('State')}). Stop the run that holds it, "
                    "or detach it from that instance, then run apply again.",
                )
            if attachment is not None:
                device = str(attachment["Device"])
                log.info("attach of %s to %s: already attached as %s; adopted", volume_id, mount.node_id, device)
                self._tag_mount(region, mount, device, volume)
            else:
                _check_zone(volume, instance, mount)
                device = _free_device(instance, mount)
                # The tag comes first, so that the mount service can match the device when it appears.
                self._tag_mount(region, mount, device, volume)
                log.debug("attaching %s to %s as %s", volume_id, mount.node_id, device)
                with aws_call("AttachVolume", volume_id, region):
                    self._ec2(region).attach_volume(VolumeId=volume_id, InstanceId=mount.node_id, Device=device)

        self._wait_attached(region, volume_id, mount)

    def detach(self, mount: MountSpec, region: str, *, force: bool) -> bool:
        volume_id = _network_volume(mount)
        volume = self._read_volume(region, volume_id)
        attachment = _attachment(volume) if volume is not None else None
        if attachment is None or attachment["InstanceId"] != mount.node_id:
            log.info("detach of %s from %s: not attached", volume_id, mount.node_id)
            self._untag_mount(region, mount, volume_id)
            return True

        state = str(attachment.get("State"))
        if state in ("detaching", "busy") and not force:
            log.debug("detach of %s from %s: still detaching", volume_id, mount.node_id)
            return False

        # The tag goes first: its removal makes the mount service unmount the file system.
        self._untag_mount(region, mount, volume_id)
        if self._send_detach(region, mount, volume_id, str(attachment["Device"]), force):
            return True
        if force:
            return self._wait_detached(region, volume_id, mount)
        return False

    def _send_detach(self, region: str, mount: MountSpec, volume_id: str, device: str, force: bool) -> bool:
        """Send DetachVolume; return True when AWS responds that the volume is not attached."""
        log.debug("detaching %s from %s (%s, force=%s)", volume_id, mount.node_id, device, force)
        with aws_call("DetachVolume", volume_id, region):
            try:
                # InstanceId is always named: it makes the call about this attachment only.
                self._ec2(region).detach_volume(
                    VolumeId=volume_id, InstanceId=mount.node_id, Device=device, Force=force
                )
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code"))
                if code not in DETACHED_CODES:
                    raise
                log.info("detach of %s from %s: AWS returned %s, so it is detached", volume_id, mount.node_id, code)
                return True
        return False

    # Waiting

    def _wait_instance(self, region: str, instance_id: str, subject: str, target: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            instance = self._describe_instance(region, instance_id)
            state = instance["State"]["Name"] if instance else "not visible yet"
            if instance is not None and state == target:
                return instance
            if target == "running" and state in GONE_STATES | {"stopping", "stopped"}:
                raise ProviderError(
                    "Node failed to start",
                    f"EC2 instance {instance_id} for {subject} in {region} went to state {state} instead of running "
                    f"({(instance or {}).get('StateReason', {}).get('Message', 'no reason given')}). Check the AMI, "
                    "instance type and subnet under providers.aws in volplan.yml, then run apply again.",
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    "Timed out waiting for the node",
                    f"EC2 instance {instance_id} for {subject} in {region} is still {state} after "
                    f"{self.settings.start_timeout:.0f}s, expected {target}. Run apply again to keep waiting; "
                    "raise start_timeout under providers.aws in volplan.yml if this is normal.",
                )
            time.sleep(self.poll_interval)

    def _wait_attached(self, region: str, volume_id: str, mount: MountSpec) -> None:
        deadline = time.monotonic() + self.settings.attach_timeout
        while True:
            volume = self._read_volume(region, volume_id)
            attachment = _attachment(volume) if volume else None
            state = str(attachment.get("State")) if attachment else "detached"
            if attachment is not None and attachment["InstanceId"] == mount.node_id and state == "attached":
                log.info("attached %s to %s at %s", volume_id, mount.node_id, mount.path)
                return
            if state == "detached" or state == "detaching":
                raise ProviderError(
                    "Attachment failed",
                    f"EBS volume {volume_id} went to state {state} while attaching to {mount.node_id} at {mount.path}. "
                    "Run apply again.",
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    "Timed out attaching the volume",
                    f"the attachment of EBS volume {volume_id} to {mount.node_id} is still {state} after "
                    f"{self.settings.attach_timeout:.0f}s. Run apply again to keep waiting.",
                )
            time.sleep(self.poll_interval)

    def _wait_detached(self, region: str, volume_id: str, mount: MountSpec) -> bool:
        deadline = time.monotonic() + self.settings.attach_timeout
        while True:
            volume = self._read_volume(region, volume_id)
            attachment = _attachment(volume) if volume else None
            if attachment is None or attachment["InstanceId"] != mount.node_id:
                log.info("detached %s from %s", volume_id, mount.node_id)
                return True
            if time.monotonic() >= deadline:
                raise ProviderError(
                    "Timed out detaching the volume",
                    f"the forced detach of EBS volume {volume_id} from {mount.node_id} is still "
                    f"{attachment.get('State')} after {self.settings.attach_timeout:.0f}s. Run the command again.",
                )
            time.sleep(self.poll_interval)

    # Tags

    def _tag_mount(self, region: str, mount: MountSpec, device: str, volume: Mapping[str, Any]) -> None:
        tags = {tag["Key"]: tag["Value"] for tag in volume.get("Tags", [])}
        created = LINEAGE_TAG in tags
        tag = mount_tag(device, str(volume["VolumeId"]), created, mount.path)
        with aws_call("CreateTags", mount.node_id, region):
            self._ec2(region).create_tags(Resources=[mount.node_id], Tags=[tag])

    def _untag_mount(self, region: str, mount: MountSpec, volume_id: str) -> None:
        instance = self._describe_instance(region, mount.node_id)
        if instance is None:
            return
        keys = [
            tag["Key"]
            for tag in instance.get("Tags", [])
            if (parsed := parse_mount_tag(tag["Key"], tag["Value"])) is not None and parsed[1] == volume_id
        ]
        if not keys:
            return
        log.debug("removing the mount tags %s of %s from %s", keys, volume_id, mount.node_id)
        try:
            with aws_call("DeleteTags", mount.node_id, region):
                self._ec2(region).delete_tags(Resources=[mount.node_id], Tags=[{"Key": key} for key in keys])
        except ProviderError as error:
            if _code(error) not in INSTANCE_GONE_CODES:
                raise

    # AWS calls

    def _describe(self, region: str, filter_name: str, values: list[str], subject: str) -> Iterator[dict[str, Any]]:
        """Yield the instances matching a filter, in chunks of 200 values with 1,000 per page."""
        paginator = self._ec2(region).get_paginator("describe_instances")
        for start in range(0, len(values), FILTER_VALUES_MAX):
            chunk = values[start : start + FILTER_VALUES_MAX]
            log.debug("describing %d EC2 instances in %s by %s", len(chunk), region, filter_name)
            with aws_call("DescribeInstances", subject, region):
                pages = paginator.paginate(
                    Filters=[{"Name": filter_name, "Values": chunk}],
                    PaginationConfig={"PageSize": INSTANCE_PAGE_SIZE},
                )
                for page in pages:
                    for reservation in page.get("Reservations", []):
                        yield from reservation.get("Instances", [])

    def _describe_instance(self, region: str, instance_id: str) -> dict[str, Any] | None:
        return next(iter(self._describe(region, "instance-id", [instance_id], instance_id)), None)

    def _require_instance(self, region: str, instance_id: str, path: str) -> dict[str, Any]:
        instance = self._describe_instance(region, instance_id)
        state = instance["State"]["Name"] if instance else "gone"
        if instance is None or state in GONE_STATES:
            raise ProviderError(
                "Node not found",
                f"cannot attach at {path}: EC2 instance {instance_id} in {region} is {state}. Run plan: "
                "the node will be started again.",
            )
        return instance

    def _require_volume(self, region: str, volume_id: str, mount: MountSpec) -> dict[str, Any]:
        volume = self._read_volume(region, volume_id)
        if volume is None:
            raise ProviderError(
                "Volume not found",
                f"cannot attach {volume_id} at {mount.path} on {mount.node_id}: it does not exist in {region}.",
            )
        return volume

    def _image(self, region: str, subject: str) -> str:
        if self.settings.ami:
            return self.settings.ami
        parameter = self._required("ami", self.settings.ami_ssm_parameter, subject)
        log.debug("reading the AMI id from SSM parameter %s in %s", parameter, region)
        with aws_call("GetParameter", parameter, region):
            response = self._ssm(region).get_parameter(Name=parameter)
        return str(response["Parameter"]["Value"])

    def _required(self, name: str, value: str | None, subject: str) -> str:
        if value:
            return value
        other = " (or ami_ssm_parameter, such as /aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id)"
        raise UsageError(
            "AWS node setting missing",
            f"{subject} needs an EC2 instance, and providers.aws in volplan.yml has no {name}. Add "
            f"{name}:{other if name == 'ami' else ''} under providers.aws in volplan.yml.",
        )

    def _network(self, spec: NodeSpec) -> dict[str, Any]:
        settings = self.settings
        request: dict[str, Any] = {}
        zone = spec.availability_zone
        if settings.subnet_id:
            request["SubnetId"] = settings.subnet_id
            subnet_zone = self._subnet_zone(spec.region, settings.subnet_id)
            if zone and subnet_zone != zone:
                raise ProviderError(
                    "Subnet in another availability zone",
                    f"{spec.address} must run in {zone}, where its volumes are, but subnet {settings.subnet_id} is "
                    f"in {subnet_zone}. Set subnet_id under providers.aws in volplan.yml to a subnet in {zone}.",
                )
        else:
            request["Placement"] = {"AvailabilityZone": zone or self._first_zone(spec.region, spec.address)}
        if settings.security_group_ids:
            request["SecurityGroupIds"] = list(settings.security_group_ids)
        if settings.key_name:
            request["KeyName"] = settings.key_name
        return request

    def _subnet_zone(self, region: str, subnet_id: str) -> str:
        with aws_call("DescribeSubnets", subnet_id, region):
            response = self._ec2(region).describe_subnets(SubnetIds=[subnet_id])
        return str(response["Subnets"][0]["AvailabilityZone"])

    def _instance_lock(self, instance_id: str) -> threading.Lock:
        with self._lock:
            return self._instance_locks.setdefault(instance_id, threading.Lock())


def _network_volume(mount: MountSpec) -> str:
    if mount.volume_id is None:
        raise ProviderError(
            "Instance volumes not supported",
            f"the aws provider cannot mount the instance path {mount.instance_path} at {mount.path} on "
            f"{mount.node_id}. Remove the instance mount, or set optional: true on it.",
        )
    return mount.volume_id


def _attachment(volume: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return the volume's attachment that has not ended, if any (volplan attaches to one instance)."""
    for attachment in (volume or {}).get("Attachments", []):
        if attachment.get("State") != "detached":
            return dict(attachment)
    return None


def _check_zone(volume: Mapping[str, Any], instance: Mapping[str, Any], mount: MountSpec) -> None:
    volume_zone = volume.get("AvailabilityZone")
    instance_zone = instance.get("Placement", {}).get("AvailabilityZone")
    if volume_zone and instance_zone and volume_zone != instance_zone:
        raise ProviderError(
            "Volume in another availability zone",
            f"EBS volume {volume['VolumeId']} is in {volume_zone}, instance {mount.node_id} in {instance_zone}; an "
            "EBS volume attaches only to instances in its zone. Stop the run and apply again to start its node "
            f"in {volume_zone}.",
        )


def _free_device(instance: Mapping[str, Any], mount: MountSpec) -> str:
    used = {mapping.get("DeviceName") for mapping in instance.get("BlockDeviceMappings", [])}
    used |= {parsed[0] for tag in instance.get("Tags", []) if (parsed := parse_mount_tag(tag["Key"], tag["Value"]))}
    for device in DEVICE_NAMES:
        if device not in used:
            return device
    raise ProviderError(
        "No free device name",
        f"instance {mount.node_id} already uses every device name from {DEVICE_NAMES[0]} to {DEVICE_NAMES[-1]}, so "
        f"{mount.volume_id} cannot be attached at {mount.path}. Mount fewer volumes on one node.",
    )


def _node_tags(spec: NodeSpec, token: str) -> list[dict[str, str]]:
    tags = {"Name": spec.address, ADDRESS_TAG: spec.address, LINEAGE_TAG: spec.lineage, TOKEN_TAG: token}
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _node_facts(instance: Mapping[str, Any], region: str) -> NodeFacts:
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
    devices = {
        mapping["DeviceName"]: mapping["Ebs"]["VolumeId"]
        for mapping in instance.get("BlockDeviceMappings", [])
        if "Ebs" in mapping and mapping["Ebs"].get("Status") != "detaching"
    }
    mounts: dict[str, MountFacts] = {}
    for key, value in tags.items():
        parsed = parse_mount_tag(key, value)
        if parsed is not None and devices.get(parsed[0]) == parsed[1]:
            mounts[parsed[2]] = MountFacts(parsed[2], volume_id=parsed[1])
    return NodeFacts(
        id=instance["InstanceId"],
        backend="aws",
        region=region,
        availability_zone=instance.get("Placement", {}).get("AvailabilityZone"),
        created_at=_timestamp(instance.get("LaunchTime")),
        token=tags.get(TOKEN_TAG),
        mounts=mounts,
    )


def _code(error: ProviderError) -> str | None:
    cause = error.__cause__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code"))
    return None


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value or "")
