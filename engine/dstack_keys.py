"""What dstack 0.22.5 accepts: backend names, volume fields per backend, run configuration keys.

Taken from dstack 0.22.5's own configuration models (src/dstack/_internal/core/models).
"""

from __future__ import annotations

BACKENDS: frozenset[str] = frozenset(
    {
        "amddevcloud",
        "aws",
        "azure",
        "cloudrift",
        "crusoe",
        "cudo",
        "datacrunch",
        "daytona",
        "digitalocean",
        "dstack",
        "gcp",
        "hotaisle",
        "jarvislabs",
        "kubernetes",
        "lambda",
        "lium",
        "nebius",
        "oci",
        "remote",
        "runpod",
        "seeweb",
        "slurm",
        "tensordock",
        "vastai",
        "verda",
        "vultr",
    }
)

_COMMON_VOLUME_FIELDS = ("auto_cleanup_duration", "backend", "name", "tags", "type")

# Backends with a volume configuration of their own. dstack has volumes on these only.
VOLUME_FIELDS: dict[str, frozenset[str]] = {
    "aws": frozenset(_COMMON_VOLUME_FIELDS + ("availability_zone", "region", "size", "volume_id")),
    "gcp": frozenset(_COMMON_VOLUME_FIELDS + ("availability_zone", "region", "size", "volume_id")),
    "runpod": frozenset(_COMMON_VOLUME_FIELDS + ("availability_zone", "region", "size", "volume_id")),
    "daytona": frozenset(_COMMON_VOLUME_FIELDS + ("volume_id",)),
    "lium": frozenset(_COMMON_VOLUME_FIELDS + ("volume_id",)),
    "kubernetes": frozenset(
        _COMMON_VOLUME_FIELDS + ("access_modes", "claim_name", "read_only", "region", "size", "storage_class_name")
    ),
}

_RUN_COMMON = (
    "availability_zones",
    "backend_options",
    "backends",
    "creation_policy",
    "docker",
    "dstack",
    "entrypoint",
    "env",
    "files",
    "fleets",
    "home_dir",
    "idle_duration",
    "image",
    "instance_types",
    "instances",
    "max_duration",
    "max_price",
    "name",
    "nvcc",
    "priority",
    "privileged",
    "python",
    "regions",
    "registry_auth",
    "repos",
    "reservation",
    "resources",
    "retry",
    "schedule",
    "setup",
    "shell",
    "single_branch",
    "spot_policy",
    "startup_order",
    "stop_criteria",
    "stop_duration",
    "tags",
    "type",
    "user",
    "utilization_policy",
    "volumes",
    "working_dir",
)

RUN_KEYS: dict[str, frozenset[str]] = {
    "dev-environment": frozenset(_RUN_COMMON + ("ide", "inactivity_duration", "init", "ports", "version")),
    "task": frozenset(_RUN_COMMON + ("commands", "groups", "nodes", "ports")),
    "service": frozenset(
        _RUN_COMMON
        + (
            "auth",
            "commands",
            "gateway",
            "groups",
            "https",
            "model",
            "port",
            "probes",
            "rate_limits",
            "replicas",
            "scaling",
            "strip_prefix",
        )
    ),
}

CONFIGURATION_TYPES: tuple[str, ...] = ("volume", "dev-environment", "task", "service", "fleet", "gateway")
