"""moto's EC2 server made as strict as AWS where the AWS provider depends on it.

moto is lenient where AWS is strict, and its transitions are instant. This layer patches moto's
EC2 responses and volume model inside the test process (the ThreadedMotoServer runs in this
process), so that every client, including a volplan subprocess, sees:

- DescribeVolumes pages: MaxResults (5 to 500) and NextToken are honoured, a page may hold fewer
  results than asked (`page_cap`), at most 200 values per filter, and VolumeIds with MaxResults
  is rejected.
- New volumes stay `creating` for `creating_reads` DescribeVolumes responses before `available`.
- CreateVolume honours ClientToken: the same token with the same parameters returns the first
  volume, with other parameters fails with IdempotentParameterMismatch.
- CreateVolume rejects unknown volume types and zones and sizes out of range; ModifyVolume
  rejects a shrink, unknown types, a modification while an earlier one is optimizing, and more
  than `max_modifications` per volume.
- `fail()` makes the server return an AWS error for the next matching requests: throttling
  bursts, and refusals that come from AWS's policy engine, which moto does not run
  (UnauthorizedOperation, expired credentials).

Instances and attachments follow AWS's timing and refusals too: see tests/aws/strict_nodes.py
(`StrictEc2.nodes`).

`actions` records every request the server received, retries included.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import Volume
from moto.ec2.responses import EC2Response

from tests.aws.strict_nodes import StrictNodes

VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")
# Size limits in GiB by volume type, from the EBS volume types documentation.
SIZE_LIMITS = {
    "gp3": (1, 16384),
    "gp2": (1, 16384),
    "io1": (4, 16384),
    "io2": (4, 65536),
    "st1": (125, 16384),
    "sc1": (125, 16384),
    "standard": (1, 1024),
}
FILTER_VALUES_MAX = 200


@dataclass
class InjectedFailure:
    action: str | None
    code: str
    message: str
    status: int
    remaining: int


class StrictEc2:
    """The strict behaviour's settings and bookkeeping, shared with the server's threads."""

    def __init__(self) -> None:
        self.creating_reads = 1
        self.page_cap: int | None = None
        self.optimizing = False
        self.max_modifications = 4
        self.actions: list[str] = []
        self._lock = threading.RLock()
        self._creating: dict[str, int] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, tuple[Any, ...]]] = {}
        self._modifications: dict[str, int] = {}
        self._optimizing: set[str] = set()
        self._failures: list[InjectedFailure] = []
        self.nodes = StrictNodes(self._lock)

    def fail(self, code: str, message: str, *, action: str | None = None, status: int = 400, times: int = 1) -> None:
        """Fail the next `times` requests for `action` (any action when None) with an AWS error."""
        with self._lock:
            self._failures.append(InjectedFailure(action, code, message, status, times))

    def count(self, action: str) -> int:
        with self._lock:
            return self.actions.count(action)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original_call = EC2Response.call_action
        original_create = EC2Response.create_volume
        original_modify = EC2Response.modify_volume
        original_status = Volume.__dict__["status"].fget
        layer = self

        def call_action(response: EC2Response) -> Any:
            action = response._get_action()
            with layer._lock:
                layer.actions.append(action)
                failure = layer._take_failure(action)
            if failure is not None:
                return _error_response(failure)
            layer.nodes.before(action, response)
            return original_call(response)

        def status(volume: Volume) -> str:
            with layer._lock:
                if layer._creating.get(volume.id, 0) > 0:
                    return "creating"
            return str(original_status(volume))

        monkeypatch.setattr(EC2Response, "call_action", call_action)
        monkeypatch.setattr(EC2Response, "describe_volumes", lambda response: layer._describe_volumes(response))
        monkeypatch.setattr(
            EC2Response, "create_volume", lambda response: layer._create_volume(response, original_create)
        )
        monkeypatch.setattr(
            EC2Response, "modify_volume", lambda response: layer._modify_volume(response, original_modify)
        )
        monkeypatch.setattr(Volume, "status", property(status))
        self.nodes.install(monkeypatch)

    def _take_failure(self, action: str) -> InjectedFailure | None:
        for failure in self._failures:
            if failure.remaining > 0 and failure.action in (None, action):
                failure.remaining -= 1
                return failure
        return None

    # DescribeVolumes

    def _describe_volumes(self, response: EC2Response) -> Any:
        filters = response._filters_from_querystring()
        volume_ids = response._get_param("VolumeIds", [])
        max_results = response._get_int_param("MaxResults")
        next_token = response._get_param("NextToken")
        _check_describe_parameters(filters, volume_ids, max_results, next_token)

        volumes = response.ec2_backend.describe_volumes(volume_ids=volume_ids, filters=filters)
        start = int(next_token) if next_token else 0
        size = min(max_results or len(volumes), self.page_cap or len(volumes))
        page = volumes[start : start + max(size, 1)]
        result: dict[str, Any] = {"Volumes": page}
        if start + len(page) < len(volumes):
            result["NextToken"] = str(start + len(page))

        # The volumes' states are read while serializing, so a read counts once it is written.
        serialized = response.serialized(ActionResult(result))
        with self._lock:
            for volume in page:
                if self._creating.get(volume.id, 0) > 0:
                    self._creating[volume.id] -= 1
        return serialized

    # CreateVolume

    def _create_volume(self, response: EC2Response, original: Any) -> Any:
        token = response._get_param("ClientToken")
        size = response._get_int_param("Size")
        zone = response._get_param("AvailabilityZone")
        volume_type = response._get_param("VolumeType") or "gp2"
        tags = response._parse_tag_specification().get("volume", {})
        _check_create_parameters(response, token, size, zone, volume_type)

        fingerprint = (size, zone, volume_type, tuple(sorted(tags.items())))
        key = (response.current_account, response.region, token or "")
        with self._lock:
            if token and key in self._tokens:
                volume_id, first = self._tokens[key]
                if first != fingerprint:
                    raise EC2ClientError(
                        "IdempotentParameterMismatch",
                        f"The client token {token} was already used for a request with different parameters.",
                    )
                return ActionResult(response.ec2_backend.get_volume(volume_id))

            result = original(response)
            volume = result.result
            self._creating[volume.id] = self.creating_reads
            if token:
                self._tokens[key] = (volume.id, fingerprint)
            return result

    # ModifyVolume

    def _modify_volume(self, response: EC2Response, original: Any) -> Any:
        volume_id = response._get_param("VolumeId")
        size = response._get_int_param("Size")
        volume_type = response._get_param("VolumeType")
        volume = response.ec2_backend.get_volume(volume_id)

        with self._lock:
            if self._creating.get(volume_id, 0) > 0:
                raise EC2ClientError("IncorrectState", f"The volume '{volume_id}' is in the 'creating' state.")
            if size is not None and size < volume.size:
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"New size cannot be smaller than existing size: requested {size}, volume has {volume.size}.",
                )
            if volume_type is not None and volume_type not in VOLUME_TYPES:
                raise EC2ClientError("InvalidParameterValue", f"Invalid value '{volume_type}' for volumeType.")
            if volume_id in self._optimizing:
                raise EC2ClientError(
                    "IncorrectModificationState",
                    f"Volume {volume_id} cannot be modified while an earlier modification is optimizing.",
                )
            if self._modifications.get(volume_id, 0) >= self.max_modifications:
                raise EC2ClientError(
                    "VolumeModificationRateExceeded",
                    "You've reached the maximum modification rate per volume limit. Wait before modifying it again.",
                )

            result = original(response)
            self._modifications[volume_id] = self._modifications.get(volume_id, 0) + 1
            if self.optimizing:
                self._optimizing.add(volume_id)
            return result


def _check_describe_parameters(
    filters: dict[str, Any], volume_ids: list[str], max_results: int | None, next_token: str | None
) -> None:
    if volume_ids and max_results is not None:
        raise EC2ClientError(
            "InvalidParameterCombination", "The parameter volumeSet cannot be used with the parameter maxResults"
        )
    if max_results is not None and not 5 <= max_results <= 500:
        raise EC2ClientError("InvalidParameterValue", f"Value ({max_results}) for parameter maxResults is invalid.")
    if next_token is not None and not next_token.isdigit():
        raise EC2ClientError("InvalidNextToken", f"The token '{next_token}' is invalid.")
    for name, values in filters.items():
        if len(values) > FILTER_VALUES_MAX:
            raise EC2ClientError(
                "FilterLimitExceeded",
                f"The maximum number of filter values specified on a single call is {FILTER_VALUES_MAX} ({name}).",
            )


def _check_create_parameters(
    response: EC2Response, token: str | None, size: int | None, zone: str | None, volume_type: str
) -> None:
    if token is not None and not 1 <= len(token) <= 64:
        raise EC2ClientError("InvalidParameterValue", f"Value ({token}) for parameter clientToken is invalid.")
    if not zone:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter AvailabilityZone.")
    zones = {zone.name for zone in response.ec2_backend.describe_availability_zones()}
    if zone not in zones:
        raise EC2ClientError("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
    if volume_type not in VOLUME_TYPES:
        raise EC2ClientError(
            "InvalidParameterValue", f"The parameter volumeType must be one of {', '.join(VOLUME_TYPES)}."
        )
    low, high = SIZE_LIMITS[volume_type]
    if size is None or not low <= size <= high:
        raise EC2ClientError(
            "InvalidParameterValue", f"Volume of {size} GiB is out of range for {volume_type} ({low} to {high} GiB)."
        )


def _error_response(failure: InjectedFailure) -> tuple[int, dict[str, str], str]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{failure.code}</Code><Message>{failure.message}</Message></Error>"
        f"</Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    )
    return failure.status, {"status": str(failure.status), "Content-Type": "text/xml"}, body
