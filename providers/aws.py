"""The AWS provider: dstack volumes as EBS volumes, through boto3.

Credentials, endpoints (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_EC2) and the default region come from
boto3's standard chain; each call goes to the region that the volume's configuration or state
records. Retries are botocore's own retry modes. Volumes that volplan creates carry these tags:

    Name              the volume's name
    volplan:address   its address, such as volume.data
    volplan:lineage   the lineage of the state that manages it
    volplan:token     the create's idempotency token, which crash recovery searches for

Facts report only the user's tags, so that these never show up as changes in a plan. Run nodes
(EC2 instances) and their attachments are in providers/aws_nodes.py.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from engine.errors import ProviderError, VolumeNotFound
from providers.aws_errors import aws_call
from providers.aws_nodes import AwsNodes, NodeSettings, duration_option, invalid_option
from providers.base import (
    Capabilities,
    MountSpec,
    NodeFacts,
    NodeSpec,
    Provider,
    VolumeFacts,
    VolumeSpec,
    backend_rules,
)

log = logging.getLogger(__name__)

ADDRESS_TAG = "volplan:address"
LINEAGE_TAG = "volplan:lineage"
TOKEN_TAG = "volplan:token"
RESERVED_TAG_PREFIXES = ("volplan:", "aws:")

RETRY_MODES = ("adaptive", "standard", "legacy")
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")
# Options of run nodes, read by NodeSettings.
NODE_OPTIONS = NodeSettings.OPTIONS

# AWS accepts at most 200 values in one filter, and at most 500 results per page.
FILTER_VALUES_MAX = 200
PAGE_SIZE = 500
CLIENT_TOKEN_MAX = 64

# The volume_available waiter of botocore, with `error` as a failure and no error acceptor, so
# that a volume not yet visible (EC2 is eventually consistent) is polled again.
_AVAILABLE_WAITER = {
    "version": 2,
    "waiters": {
        "VolumeAvailable": {
            "operation": "DescribeVolumes",
            "delay": 5,
            "maxAttempts": 60,
            "acceptors": [
                {"state": "success", "matcher": "pathAll", "argument": "Volumes[].State", "expected": "available"},
                {"state": "failure", "matcher": "pathAny", "argument": "Volumes[].State", "expected": "error"},
                {"state": "failure", "matcher": "pathAny", "argument": "Volumes[].State", "expected": "deleted"},
            ],
        }
    },
}


@dataclass(frozen=True)
class AwsSettings:
    """The provider's options from volplan.yml (`providers: {aws: {kind: aws, ...}}`)."""

    retry_mode: str = "adaptive"
    max_attempts: int = 10
    # Seconds to wait for a new volume to become available, and between two reads meanwhile.
    create_timeout: float = 300
    poll_interval: float = 5
    volume_type: str = "gp3"
    nodes: NodeSettings = NodeSettings()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AwsSettings:
        known = ("retry_mode", "max_attempts", "create_timeout", "poll_interval", "volume_type")
        unknown = sorted(str(key) for key in options if key not in known + NODE_OPTIONS)
        if unknown:
            raise invalid_option(unknown[0], options[unknown[0]], f"use one of: {', '.join(known + NODE_OPTIONS)}")

        settings = cls()
        retry_mode = options.get("retry_mode", settings.retry_mode)
        if retry_mode not in RETRY_MODES:
            raise invalid_option("retry_mode", retry_mode, f"use one of: {', '.join(RETRY_MODES)}")
        volume_type = options.get("volume_type", settings.volume_type)
        if volume_type not in VOLUME_TYPES:
            raise invalid_option("volume_type", volume_type, f"use one of: {', '.join(VOLUME_TYPES)}")
        max_attempts = options.get("max_attempts", settings.max_attempts)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise invalid_option("max_attempts", max_attempts, "use a whole number of 1 or more, such as 10")

        return cls(
            retry_mode=retry_mode,
            max_attempts=max_attempts,
            create_timeout=duration_option(options, "create_timeout", settings.create_timeout),
            poll_interval=duration_option(options, "poll_interval", settings.poll_interval),
            volume_type=volume_type,
            nodes=NodeSettings.from_options(options),
        )


def client_token(token: str) -> str:
    """Return the ClientToken for a create: the token itself when AWS accepts its length, else its hash."""
    if len(token) <= CLIENT_TOKEN_MAX:
        return token
    return hashlib.sha256(token.encode()).hexdigest()[:CLIENT_TOKEN_MAX]


class AwsProvider(Provider):
    """EBS volumes in the regions the configurations name. Thread-safe."""

    kind = "aws"

    def __init__(self, settings: AwsSettings | None = None, session: boto3.Session | None = None) -> None:
        self.settings = settings or AwsSettings()
        self._session = session or boto3.Session()
        # total_max_attempts counts the first attempt too, as max_attempts does in the AWS config file.
        retries: Any = {"mode": self.settings.retry_mode, "total_max_attempts": self.settings.max_attempts}
        self._config = Config(retries=retries)
        self._clients: dict[str, Any] = {}
        self._zones: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ssm_clients: dict[str, Any] = {}
        self.nodes = AwsNodes(
            self.settings.nodes,
            self.settings.poll_interval,
            self._client,
            self._ssm_client,
            self._describe_one,
            self._first_zone,
        )

    def describe(self) -> str:
        return (
            f"the aws provider (credentials and endpoints from the AWS SDK, retry mode "
            f"{self.settings.retry_mode}, at most {self.settings.max_attempts} attempts per call)"
        )

    def capabilities(self, backend: str) -> Capabilities:
        # NOTE: io1 and io2 volumes can be multi-attached; volplan creates other types.
        # NOTE: instance volumes (instance_path) are not mounted on EC2 nodes yet, so the planner
        # rejects them, or skips them where they are optional.
        region = self._session.region_name
        return replace(
            backend_rules("aws"),
            multi_attach=False,
            instance_volumes=False,
            attach_per_zone=True,
            stop_releases_volumes=True,
            regions=(region,) if region else (),
        )

    # Reading

    def refresh_volumes(
        self, volume_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, VolumeFacts]:
        by_region: dict[str, list[str]] = {}
        requested = 0
        for volume_id in volume_ids:
            requested += 1
            region = self._region((regions or {}).get(volume_id), volume_id)
            by_region.setdefault(region, []).append(volume_id)

        found: dict[str, VolumeFacts] = {}
        for region, ids in sorted(by_region.items()):
            for volume in self._describe(region, "volume-id", ids, f"{len(ids)} volumes"):
                found[volume["VolumeId"]] = _facts(volume, region)
        log.debug("refreshed %d EBS volumes in %d regions, %d found", requested, len(by_region), len(found))
        return found

    def read_volume(self, volume_id: str, region: str | None = None) -> VolumeFacts:
        region = self._region(region, volume_id)
        volume = self._describe_one(region, volume_id)
        if volume is None:
            raise VolumeNotFound(
                "Volume not found",
                f"EBS volume {volume_id} does not exist in {region} (DescribeVolumes found no such volume). "
                "Check the volume_id and the region in the configuration.",
            )
        return _facts(volume, region)

    def find_volumes_by_token(
        self, tokens: Iterable[str], regions: Iterable[str | None] = ()
    ) -> dict[str, VolumeFacts]:
        wanted = sorted(set(tokens))
        if not wanted:
            return {}
        found: dict[str, VolumeFacts] = {}
        for region in sorted({self._region(region, "the interrupted creates") for region in regions or [None]}):
            for volume in self._describe(region, f"tag:{TOKEN_TAG}", wanted, f"{len(wanted)} interrupted creates"):
                facts = _facts(volume, region)
                if facts.token is not None:
                    found[facts.token] = facts
        return found

    # Changing

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        if spec.backend != "aws":
            raise ProviderError(
                "Backend not served by AWS",
                f"{spec.address} has backend {spec.backend}, which the aws provider cannot create. "
                f"Serve it with another provider, such as --provider {spec.backend}=local.",
            )
        _check_user_tags(spec.tags, spec.address)
        region = self._region(spec.region, spec.address)
        client = self._client(region)
        zone = spec.availability_zone or self._first_zone(region, spec.address)
        tags = {**spec.tags, "Name": spec.name, ADDRESS_TAG: spec.address, LINEAGE_TAG: spec.lineage, TOKEN_TAG: token}

        log.debug("creating an EBS volume for %s in %s with token %s", spec.address, zone, token)
        with aws_call("CreateVolume", spec.address, region):
            volume = client.create_volume(
                AvailabilityZone=zone,
                Size=spec.size_gb,
                VolumeType=self.settings.volume_type,
                ClientToken=client_token(token),
                TagSpecifications=[{"ResourceType": "volume", "Tags": _tag_list(tags)}],
            )
        log.debug("created %s for %s, state %s", volume["VolumeId"], spec.address, volume.get("State"))

        if volume.get("State") != "available":
            volume["State"] = self._wait_available(region, volume["VolumeId"], spec.address)
        return _facts(volume, region)

    def update_volume(
        self,
        volume_id: str,
        *,
        size_gb: int | None,
        tags: Mapping[str, str] | None,
        region: str | None = None,
        name: str | None = None,
    ) -> VolumeFacts:
        region = self._region(region, volume_id)
        current = self.read_volume(volume_id, region)
        updated = current

        if size_gb is not None and size_gb != current.size_gb:
            updated = replace(updated, size_gb=self._grow(region, current, size_gb))
        if tags is not None and dict(tags) != dict(current.tags):
            _check_user_tags(tags, volume_id)
            self._retag(region, volume_id, current.tags, tags)
            updated = replace(updated, tags=dict(tags))
        if name is not None and name != current.name:
            self._rename(region, volume_id, name)
            updated = replace(updated, name=name)
        return updated

    def _rename(self, region: str, volume_id: str, name: str) -> None:
        """Set the Name tag, which is how the EC2 console and dstack show a volume's name."""
        log.debug("renaming %s to %s", volume_id, name)
        with aws_call("CreateTags", volume_id, region):
            self._client(region).create_tags(Resources=[volume_id], Tags=[{"Key": "Name", "Value": name}])

    def delete_volume(self, volume_id: str, region: str | None = None) -> None:
        region = self._region(region, volume_id)
        volume = self._describe_one(region, volume_id)
        if volume is None or volume.get("State") in ("deleting", "deleted"):
            log.info("delete of %s in %s: already gone", volume_id, region)
            return
        _check_deletable(volume, region)

        log.debug("deleting EBS volume %s in %s", volume_id, region)
        try:
            with aws_call("DeleteVolume", volume_id, region):
                self._client(region).delete_volume(VolumeId=volume_id)
        except VolumeNotFound:
            log.info("delete of %s in %s: deleted meanwhile", volume_id, region)
            return
        log.debug("deleted EBS volume %s in %s", volume_id, region)

    # Run nodes

    def start_node(self, spec: NodeSpec, token: str) -> NodeFacts:
        if spec.backend != "aws":
            raise ProviderError(
                "Backend not served by AWS",
                f"{spec.address} has backend {spec.backend}, which the aws provider cannot start. "
                f"Serve it with another provider, such as --provider {spec.backend}=local.",
            )
        region = self._region(spec.region, spec.address)
        return self.nodes.start(replace(spec, region=region), token, client_token(token))

    def stop_node(self, node_id: str, region: str | None = None) -> None:
        self.nodes.stop(node_id, self._region(region, node_id))

    def refresh_nodes(
        self, node_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, NodeFacts]:
        ids = list(node_ids)
        resolved = {node_id: self._region((regions or {}).get(node_id), node_id) for node_id in ids}
        return self.nodes.refresh(ids, resolved)

    def find_nodes_by_token(self, tokens: Iterable[str], regions: Iterable[str | None] = ()) -> dict[str, NodeFacts]:
        resolved = [self._region(region, "the interrupted starts") for region in regions or [None]]
        return self.nodes.find_by_token(tokens, resolved)

    def attach_volume(self, mount: MountSpec) -> None:
        self.nodes.attach(mount, self._region(mount.region, mount.node_id))

    def detach_volume(self, mount: MountSpec, *, force: bool) -> bool:
        return self.nodes.detach(mount, self._region(mount.region, mount.node_id), force=force)

    # AWS calls

    def _ssm_client(self, region: str) -> Any:
        with self._lock:
            client = self._ssm_clients.get(region)
            if client is None:
                client = self._session.client("ssm", region_name=region, config=self._config)
                self._ssm_clients[region] = client
            return client

    def _client(self, region: str) -> Any:
        # boto3 sessions are not thread-safe, but the clients they make are.
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._session.client("ec2", region_name=region, config=self._config)
                self._clients[region] = client
            return client

    def _region(self, region: str | None, subject: str) -> str:
        if region:
            return region
        default: str | None = self._session.region_name
        if default:
            return default
        raise ProviderError(
            "AWS region missing",
            f"{subject} has no region, and the AWS SDK has no default region. Add region: to the "
            "volume's configuration, or set AWS_DEFAULT_REGION.",
        )

    def _describe(self, region: str, filter_name: str, values: list[str], subject: str) -> Iterator[dict[str, Any]]:
        """Yield the volumes matching a filter, in as few DescribeVolumes calls as AWS allows.

        A filter, unlike the VolumeIds parameter, returns what exists instead of failing the
        whole call when one volume is gone.
        """
        paginator = self._client(region).get_paginator("describe_volumes")
        for start in range(0, len(values), FILTER_VALUES_MAX):
            chunk = values[start : start + FILTER_VALUES_MAX]
            log.debug("describing %d EBS volumes in %s by %s", len(chunk), region, filter_name)
            with aws_call("DescribeVolumes", subject, region):
                pages = paginator.paginate(
                    Filters=[{"Name": filter_name, "Values": chunk}], PaginationConfig={"PageSize": PAGE_SIZE}
                )
                for page in pages:
                    yield from (volume for volume in page.get("Volumes", []) if volume.get("State") != "deleted")

    def _describe_one(self, region: str, volume_id: str) -> dict[str, Any] | None:
        return next(iter(self._describe(region, "volume-id", [volume_id], volume_id)), None)

    def _first_zone(self, region: str, subject: str) -> str:
        with self._lock:
            cached = self._zones.get(region)
        if cached:
            return cached

        with aws_call("DescribeAvailabilityZones", subject, region):
            response = self._client(region).describe_availability_zones(
                Filters=[{"Name": "state", "Values": ["available"]}]
            )
        zones: list[str] = sorted(
            str(zone["ZoneName"])
            for zone in response.get("AvailabilityZones", [])
            if zone.get("ZoneType", "availability-zone") == "availability-zone"
        )
        if not zones:
            raise ProviderError(
                "No availability zone",
                f"{region} reports no available zone for {subject}. Set availability_zone: in the configuration.",
            )
        with self._lock:
            self._zones[region] = zones[0]
        return zones[0]

    def _wait_available(self, region: str, volume_id: str, address: str) -> str:
        """Wait until a new volume is available; return the state it was last seen in."""
        delay = self.settings.poll_interval
        attempts = max(1, math.ceil(self.settings.create_timeout / delay)) if delay > 0 else 1
        waiter = create_waiter_with_client("VolumeAvailable", WaiterModel(_AVAILABLE_WAITER), self._client(region))
        log.debug("waiting up to %ss for %s (%s) to become available", self.settings.create_timeout, volume_id, address)
        # WaiterError is a BotoCoreError, so it is caught before aws_call translates it.
        with aws_call("DescribeVolumes", volume_id, region):
            try:
                waiter.wait(
                    Filters=[{"Name": "volume-id", "Values": [volume_id]}],
                    WaiterConfig={"Delay": delay, "MaxAttempts": attempts},
                )
            except WaiterError as error:
                return _waiter_outcome(error, volume_id, address, region, self.settings.create_timeout)
        return "available"

    def _grow(self, region: str, current: VolumeFacts, size_gb: int) -> int:
        if size_gb < current.size_gb:
            raise ProviderError(
                "Volume cannot shrink",
                f"EBS volume {current.id} is {current.size_gb} GB and cannot become {size_gb} GB: EBS volumes only "
                f"grow. Set size: {current.size_gb}GB or more.",
            )
        log.debug("growing %s in %s from %d to %d GiB", current.id, region, current.size_gb, size_gb)
        with aws_call("ModifyVolume", current.id, region):
            response = self._client(region).modify_volume(VolumeId=current.id, Size=size_gb)
        target: int = response.get("VolumeModification", {}).get("TargetSize", size_gb)
        log.debug("modification of %s to %d GiB started", current.id, target)
        return target

    def _retag(self, region: str, volume_id: str, current: Mapping[str, str], desired: Mapping[str, str]) -> None:
        changed = {key: value for key, value in desired.items() if current.get(key) != value}
        removed = sorted(key for key in current if key not in desired)
        client = self._client(region)
        if changed:
            log.debug("setting tags %s on %s", sorted(changed), volume_id)
            with aws_call("CreateTags", volume_id, region):
                client.create_tags(Resources=[volume_id], Tags=_tag_list(changed))
        if removed:
            log.debug("removing tags %s from %s", removed, volume_id)
            with aws_call("DeleteTags", volume_id, region):
                client.delete_tags(Resources=[volume_id], Tags=[{"Key": key} for key in removed])


def _waiter_outcome(error: WaiterError, volume_id: str, address: str, region: str, timeout: float) -> str:
    last_response: Any = error.last_response or {}
    volumes = last_response.get("Volumes") or []
    state = str(volumes[0].get("State")) if volumes else "not visible yet"
    if state in ("error", "deleted"):
        raise ProviderError(
            "Volume creation failed",
            f"EBS volume {volume_id} for {address} in {region} went to state {state} instead of available. "
            f"Delete it (aws ec2 delete-volume --region {region} --volume-id {volume_id}) and run apply again.",
        ) from error
    if "Max attempts exceeded" not in str(error):
        raise ProviderError(
            "Waiting for the volume failed",
            f"reading EBS volume {volume_id} for {address} in {region} failed: {error}. Run plan to see its state.",
        ) from error

    # The volume exists, so it is recorded: dropping it from the state would leave it unmanaged.
    log.warning(
        "%s (%s) in %s is still %s after %ss; recording it anyway, the next refresh reads its state",
        volume_id,
        address,
        region,
        state,
        timeout,
    )
    return state if volumes else "creating"


def _check_user_tags(tags: Mapping[str, str], subject: str) -> None:
    for key in sorted(tags):
        if key == "Name" or key.startswith(RESERVED_TAG_PREFIXES):
            raise ProviderError(
                "Reserved tag",
                f"{subject}: tag {key} is set by volplan (Name is the volume's name) or reserved by AWS. "
                "Remove it from tags: in the configuration.",
            )


def _check_deletable(volume: dict[str, Any], region: str) -> None:
    volume_id = volume["VolumeId"]
    tags = {tag["Key"]: tag["Value"] for tag in volume.get("Tags", [])}
    if LINEAGE_TAG not in tags:
        raise ProviderError(
            "Volume not created by volplan",
            f"EBS volume {volume_id} in {region} has no {LINEAGE_TAG} tag, so volplan did not create it and "
            "will not delete it. Delete it yourself, or remove it from the state with volplan state rm.",
        )
    instances = [attachment["InstanceId"] for attachment in volume.get("Attachments", [])]
    if instances:
        raise ProviderError(
            "Volume in use",
            f"EBS volume {volume_id} in {region} is attached to {', '.join(instances)} (state {volume.get('State')}). "
            "Detach it first, then run apply again.",
        )


def _facts(volume: dict[str, Any], region: str) -> VolumeFacts:
    tags = {tag["Key"]: tag["Value"] for tag in volume.get("Tags", [])}
    return VolumeFacts(
        id=volume["VolumeId"],
        backend="aws",
        region=region,
        availability_zone=volume.get("AvailabilityZone"),
        size_gb=int(volume["Size"]),
        tags=_user_tags(tags),
        created_at=_timestamp(volume.get("CreateTime")),
        status=str(volume.get("State", "available")),
        token=tags.get(TOKEN_TAG),
        attachments=tuple(attachment["InstanceId"] for attachment in volume.get("Attachments", [])),
        volume_type=volume.get("VolumeType"),
        name=tags.get("Name"),
    )


def _user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Return the tags the configuration sets, without Name, volplan's own tags and AWS's system tags."""
    return {key: value for key, value in tags.items() if key != "Name" and not key.startswith(RESERVED_TAG_PREFIXES)}


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value or "")
