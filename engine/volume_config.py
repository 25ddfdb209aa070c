"""`type: volume` configurations: one pydantic model per dstack backend that has network volumes.

The fields of each backend are those of dstack 0.22.5 (`engine.dstack_keys.VOLUME_FIELDS`). The
rules are dstack's client and server checks, made stricter where docs/configuration.md lists a
deliberate difference. Every model has the same attributes, so the planner reads any of them
alike: a field the backend does not have is None.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.documents import describe_value
from engine.dstack_keys import VOLUME_FIELDS
from engine.model_errors import FieldProblem, NestedProblem
from engine.templates import is_template
from engine.units import UnitError, parse_duration, parse_size_gb

# dstack's resource name pattern; dstack checks it with re.match and `$`, volplan with fullmatch.
VOLUME_NAME = re.compile(r"[a-z][a-z0-9-]{1,40}")
VOLUME_NAME_FIX = "Use 2 to 41 characters: a lowercase letter first, then lowercase letters, digits or '-'."
# dstack's tag patterns (dstack._internal.utils.tags).
TAG_KEY = re.compile(r"[_\-a-zA-Z0-9]{1,60}")
TAG_VALUE = re.compile(r"[a-zA-Z0-9 .:/=_\-+@]{0,256}")


def is_volume_name(text: str) -> bool:
    return VOLUME_NAME.fullmatch(text) is not None


class VolumeConfiguration(BaseModel):
    """A network volume to create, or an existing one to register (external)."""

    # Each backend's validator is built when that backend's first file is read, not at import:
    # a command usually reads volumes of one or two of the six backends.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    # The keys this backend's configuration accepts, set by each backend's model.
    FIELDS: ClassVar[frozenset[str]] = frozenset()

    type: Literal["volume"]
    name: str
    backend: str
    tags: dict[str, str] = Field(default_factory=dict)
    # Seconds after the last detach before dstack deletes the volume, or None to keep it.
    auto_cleanup_duration: int | None = None
    region: str | None = None
    availability_zone: str | None = None
    size_gb: int | None = Field(default=None, alias="size")
    volume_id: str | None = None
    claim_name: str | None = None
    storage_class_name: str | None = None
    access_modes: list[str] | None = None
    read_only: bool | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: object) -> object:
        if not isinstance(value, str):
            raise UnitError("must be a string", "Write a name such as my-volume.")
        if is_template(value):
            raise UnitError(
                "is a template, but a volume configuration needs one fixed name",
                "Templates such as $<< dstack.node_rank >> belong in a run's volumes:; "
                "write one volume file per rendered name.",
            )
        if not is_volume_name(value):
            raise UnitError("is not a valid volume name", VOLUME_NAME_FIX)
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
        # dstack reads `off`, false and any negative number as "never", and true as the default.
        if value is None or value is True:
            return None
        seconds = parse_duration(value)
        return seconds if seconds is not None and seconds > 0 else None

    @field_validator("tags", mode="before")
    @classmethod
    def _check_tags(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UnitError("must be a mapping of tag names to values", "Write tags: {team: ml}.")
        # NOTE: only the first invalid tag of a file is reported.
        for key, item in value.items():
            _check_tag(key, item)
        return value

    @model_validator(mode="after")
    def _check_size_or_id(self) -> VolumeConfiguration:
        if "size" in self.FIELDS and self.size_gb is None and self.external_id is None:
            id_field = "claim_name" if "claim_name" in self.FIELDS else "volume_id"
            raise FieldProblem(
                "size",
                f"is missing: a new volume needs a size, an existing one its {id_field}",
                f"Add size: 100GB, or {id_field}: of the volume to register.",
            )
        return self

    @model_validator(mode="after")
    def _check_cleanup_of_external(self) -> VolumeConfiguration:
        if self.external and self.auto_cleanup_duration is not None:
            raise FieldProblem(
                "auto_cleanup_duration",
                "is set on an external volume, which volplan never deletes",
                "Remove it, or set it to off.",
            )
        return self

    @property
    def external_id(self) -> str | None:
        """The provider's identifier of an existing volume to register, if any."""
        return self.volume_id or self.claim_name

    @property
    def external(self) -> bool:
        return self.external_id is not None


def _check_tag(key: object, value: object) -> None:
    if not isinstance(key, str):
        raise NestedProblem((str(key),), key, "is a tag name that is not a string", f'Quote it: "{key}".')
    if not isinstance(value, str):
        raise NestedProblem(
            (key,),
            value,
            "is not a string: tag values must be strings",
            f'Quote the value, for example "{describe_value(value)}".',
        )
    if not TAG_KEY.fullmatch(key):
        raise NestedProblem(
            (key,), key, "is not a valid tag name", "Use 1 to 60 letters, digits, '_' or '-' in a tag name."
        )
    if not TAG_VALUE.fullmatch(value):
        raise NestedProblem(
            (key,),
            value,
            "is not a valid tag value",
            "Use up to 256 letters, digits, spaces or . : / = _ - + @ in a tag value.",
        )


class AWSVolumeConfiguration(VolumeConfiguration):
    """An EBS volume."""

    FIELDS = VOLUME_FIELDS["aws"]
    backend: Literal["aws"]
    region: str


class GCPVolumeConfiguration(VolumeConfiguration):
    """A persistent disk."""

    FIELDS = VOLUME_FIELDS["gcp"]
    backend: Literal["gcp"]
    region: str


class RunpodVolumeConfiguration(VolumeConfiguration):
    """A RunPod network volume; dstack accepts `availability_zone` for old clients and ignores it."""

    FIELDS = VOLUME_FIELDS["runpod"]
    backend: Literal["runpod"]
    region: str


class KubernetesVolumeConfiguration(VolumeConfiguration):
    """A PersistentVolumeClaim; `claim_name` registers an existing one, `region` names the cluster."""

    FIELDS = VOLUME_FIELDS["kubernetes"]
    backend: Literal["kubernetes"]
    access_modes: list[str] | None = Field(default_factory=lambda: ["ReadWriteOnce"])
    read_only: bool | None = False


class DaytonaVolumeConfiguration(VolumeConfiguration):
    """A Daytona volume: no region and no size."""

    FIELDS = VOLUME_FIELDS["daytona"]
    backend: Literal["daytona"]


class LiumVolumeConfiguration(VolumeConfiguration):
    """A Lium volume: no region and no size."""

    FIELDS = VOLUME_FIELDS["lium"]
    backend: Literal["lium"]


VOLUME_MODELS: dict[str, type[VolumeConfiguration]] = {
    "aws": AWSVolumeConfiguration,
    "gcp": GCPVolumeConfiguration,
    "runpod": RunpodVolumeConfiguration,
    "kubernetes": KubernetesVolumeConfiguration,
    "daytona": DaytonaVolumeConfiguration,
    "lium": LiumVolumeConfiguration,
}
