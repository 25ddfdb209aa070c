"""Instances and attachments in the strict moto layer: AWS's timing and AWS's refusals.

moto starts, attaches, detaches and terminates at once, and accepts attachments that AWS
rejects. With this layer every client sees:

- RunInstances: a new instance is `pending` for `pending_reads` describe responses, then
  `running`; the same ClientToken returns the first reservation instead of a second one.
- TerminateInstances: the instance is `shutting-down` for `terminating_reads` responses, then
  `terminated` (moto releases its volumes at once).
- AttachVolume: the attachment is `attaching` for `attach_reads` responses, then `attached`;
  `hold_attach` keeps it attaching until `release`. Rejected as AWS rejects them: a volume that
  is attached or still creating (VolumeInUse, IncorrectState), a device name the instance uses
  (InvalidParameterValue), a volume in another zone (InvalidVolume.ZoneMismatch), and a pending,
  stopping, shutting-down or terminated instance (IncorrectState). A stopped instance accepts
  attachments, as on AWS.
- DetachVolume: InstanceId is required (the AWS provider always sends it, and moto fails without
  it). The attachment is `detaching` for `detach_reads` responses before the volume is
  `available`; `hold_detach` keeps it `busy` until `release` or a DetachVolume with Force=True.
  A volume that is not attached gets IncorrectState; one attached elsewhere, or under another
  device, gets InvalidAttachment.NotFound.
- DescribeInstances accepts at most 200 values per filter.

The "describe responses" are DescribeVolumes and DescribeInstances calls: each one moves every
transition one step before it is answered.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.instances import InstanceState
from moto.ec2.responses import EC2Response

FILTER_VALUES_MAX = 200
DESCRIBE_ACTIONS = frozenset({"DescribeVolumes", "DescribeInstances"})
RUNNING_OR_STOPPED = frozenset({"running", "stopped"})
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48}


@dataclass
class Transition:
    """A change that completes after `remaining` describe responses, unless held."""

    backend: Any
    remaining: int
    instance_id: str = ""
    volume_id: str = ""
    device: str = ""
    forced: bool = False


class StrictNodes:
    """The settings and bookkeeping of instance and attachment behaviour."""

    def __init__(self, lock: threading.RLock) -> None:
        self.pending_reads = 1
        self.terminating_reads = 1
        self.attach_reads = 1
        self.detach_reads = 1
        self._lock = lock
        self._starting: dict[str, Transition] = {}
        self._terminating: dict[str, Transition] = {}
        self._attaching: dict[str, Transition] = {}
        self._detaching: dict[str, Transition] = {}
        self._held: set[str] = set()
        self._tokens: dict[tuple[str, str, str], Any] = {}
        # The volumes for which a DeleteVolume arrived while they were attached.
        self.deletes_while_attached: list[str] = []

    def hold_attach(self, volume_id: str) -> None:
        """Keep the next or current attachment of `volume_id` attaching until `release`."""
        with self._lock:
            self._held.add(volume_id)

    def hold_detach(self, volume_id: str) -> None:
        """Keep the next or current detach of `volume_id` busy until `release` or a forced detach."""
        with self._lock:
            self._held.add(volume_id)

    def release(self, volume_id: str) -> None:
        with self._lock:
            self._held.discard(volume_id)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original_run = EC2Response.run_instances
        original_terminate = EC2Response.terminate_instances
        original_describe = EC2Response.describe_instances
        original_attach = EC2Response.attach_volume
        layer = self

        monkeypatch.setattr(EC2Response, "run_instances", lambda response: layer._run(response, original_run))
        monkeypatch.setattr(
            EC2Response, "terminate_instances", lambda response: layer._terminate(response, original_terminate)
        )
        monkeypatch.setattr(
            EC2Response, "describe_instances", lambda response: layer._describe(response, original_describe)
        )
        monkeypatch.setattr(EC2Response, "attach_volume", lambda response: layer._attach(response, original_attach))
        monkeypatch.setattr(EC2Response, "detach_volume", lambda response: layer._detach(response))

    def before(self, action: str, response: EC2Response) -> None:
        """Note a DeleteVolume of an attached volume; move every transition on before a describe."""
        if action == "DeleteVolume":
            self._note_delete(response)
        if action not in DESCRIBE_ACTIONS:
            return
        with self._lock:
            _advance(self._starting, lambda step: _set_state(step, "running"))
            _advance(self._terminating, lambda step: _set_state(step, "terminated"))
            _advance(self._attaching, _finish_attach, self._held)
            _advance(self._detaching, _finish_detach, self._held)

    def _note_delete(self, response: EC2Response) -> None:
        volume_id = response._get_param("VolumeId")
        with self._lock:
            volume = response.ec2_backend.volumes.get(volume_id)
            if volume is not None and volume.attachment is not None:
                self.deletes_while_attached.append(volume_id)

    # Instances

    def _run(self, response: EC2Response, original: Any) -> Any:
        token = response._get_param("ClientToken")
        key = (response.current_account, response.region, token or "")
        with self._lock:
            if token and key in self._tokens:
                return ActionResult(self._tokens[key])
            result = original(response)
            reservation = result.result
            for instance in reservation.instances:
                instance._state = InstanceState("pending", STATE_CODES["pending"])
                self._starting[instance.id] = Transition(response.ec2_backend, self.pending_reads, instance.id)
            if token:
                self._tokens[key] = reservation
            return result

    def _terminate(self, response: EC2Response, original: Any) -> Any:
        with self._lock:
            result = original(response)
            for instance_id in response._get_param("InstanceIds", []):
                instance = response.ec2_backend.get_instance(instance_id)
                instance._state = InstanceState("shutting-down", STATE_CODES["shutting-down"])
                self._starting.pop(instance_id, None)
                self._terminating[instance_id] = Transition(response.ec2_backend, self.terminating_reads, instance_id)
                for table in (self._attaching, self._detaching):
                    for volume_id in [v for v, step in table.items() if step.instance_id == instance_id]:
                        del table[volume_id]
            return result

    def _describe(self, response: EC2Response, original: Any) -> Any:
        for name, values in response._filters_from_querystring().items():
            if len(values) > FILTER_VALUES_MAX:
                raise EC2ClientError(
                    "FilterLimitExceeded",
                    f"The maximum number of filter values specified on a single call is {FILTER_VALUES_MAX} ({name}).",
                )
        return original(response)

    # Attachments

    def _attach(self, response: EC2Response, original: Any) -> Any:
        volume_id = response._get_param("VolumeId")
        instance_id = response._get_param("InstanceId")
        device = response._get_param("Device")
        backend = response.ec2_backend
        with self._lock:
            volume = backend.get_volume(volume_id)
            instance = backend.get_instance(instance_id)
            _check_attach(volume, instance, device)
            result = original(response)
            _set_attachment_state(volume, instance, device, "attaching")
            self._attaching[volume_id] = Transition(backend, self.attach_reads, instance_id, volume_id, device)
            return result

    def _detach(self, response: EC2Response) -> Any:
        volume_id = response._get_param("VolumeId")
        instance_id = response._get_param("InstanceId")
        device = response._get_param("Device")
        forced = bool(response._get_bool_param("Force", False))
        if not instance_id:
            raise EC2ClientError(
                "MissingParameter",
                "The strict test layer requires InstanceId in DetachVolume (moto fails without it).",
            )
        backend = response.ec2_backend
        with self._lock:
            volume = backend.get_volume(volume_id)
            attachment = volume.attachment
            if attachment is None:
                raise EC2ClientError("IncorrectState", f"Volume '{volume_id}' is in the 'available' state.")
            if attachment.instance.id != instance_id or (device and device != attachment.device):
                raise EC2ClientError(
                    "InvalidAttachment.NotFound",
                    f"The volume {volume_id} is not attached to instance {instance_id} as device {device}.",
                )
            step = self._detaching.get(volume_id)
            if step is None:
                self._attaching.pop(volume_id, None)
                step = Transition(backend, self.detach_reads, instance_id, volume_id, attachment.device)
                self._detaching[volume_id] = step
                _set_attachment_state(volume, attachment.instance, attachment.device, "detaching")
            step.forced = step.forced or forced
            return ActionResult(
                {
                    "VolumeId": volume_id,
                    "InstanceId": instance_id,
                    "Device": attachment.device,
                    "State": attachment.status,
                    "AttachTime": attachment.attach_time,
                }
            )


def _check_attach(volume: Any, instance: Any, device: str | None) -> None:
    if not device:
        raise EC2ClientError("MissingParameter", "The request must contain the parameter device.")
    if volume.status == "creating":
        raise EC2ClientError("IncorrectState", f"Volume '{volume.id}' is in the 'creating' state.")
    if volume.attachment is not None:
        raise EC2ClientError("VolumeInUse", f"{volume.id} is already attached to an instance")
    if instance.state not in RUNNING_OR_STOPPED:
        raise EC2ClientError("IncorrectState", f"Instance '{instance.id}' is not 'running'.")
    if device in instance.block_device_mapping:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use",
        )
    if volume.availability_zone != instance.availability_zone:
        raise EC2ClientError(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{volume.id}' is not in the same availability zone as instance '{instance.id}'",
        )


def _advance(table: dict[str, Transition], finish: Any, held: set[str] | None = None) -> None:
    for key in list(table):
        step = table[key]
        if held is not None and key in held and not step.forced:
            _mark_busy(step)
            continue
        if step.remaining > 0:
            step.remaining -= 1
            continue
        del table[key]
        finish(step)


def _mark_busy(step: Transition) -> None:
    volume = step.backend.volumes.get(step.volume_id)
    if volume is not None and volume.attachment is not None and volume.attachment.status == "detaching":
        volume.attachment.status = "busy"


def _set_state(step: Transition, name: str) -> None:
    instance = step.backend.get_instance(step.instance_id)
    instance._state = InstanceState(name, STATE_CODES[name])


def _finish_attach(step: Transition) -> None:
    volume = step.backend.volumes.get(step.volume_id)
    if volume is None or volume.attachment is None:
        return
    _set_attachment_state(volume, volume.attachment.instance, step.device, "attached")


def _finish_detach(step: Transition) -> None:
    volume = step.backend.volumes.get(step.volume_id)
    if volume is None or volume.attachment is None:
        return
    step.backend.detach_volume(step.volume_id, step.instance_id, step.device)


def _set_attachment_state(volume: Any, instance: Any, device: str, state: str) -> None:
    volume.attachment.status = state
    mapping = instance.block_device_mapping.get(device)
    if mapping is not None:
        # moto shows a mapping's status "in-use" as "attached" and any other value as it is.
        mapping.status = "in-use" if state == "attached" else state
