"""The provider interface: what the executor and the refresh may ask of a cloud.

Every call is idempotent: creating with a token that was already used returns the volume it
made, deleting a missing volume succeeds. Provider errors are translated into the project's
error types inside each provider module.

Volumes are required of every provider. Run nodes and their mounts (`start_node`,
`stop_node`, `refresh_nodes`, `find_nodes_by_token`, `attach_volume`, `detach_volume`) are
optional: the defaults raise ProviderError, so a provider that only serves volumes keeps
working until it implements them. Each method's docstring states the contract a
provider must keep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.errors import ProviderError


@dataclass(frozen=True)
class VolumeSpec:
    """The fields a create needs for a volume."""

    address: str
    name: str
    backend: str
    region: str | None
    availability_zone: str | None
    size_gb: int
    tags: Mapping[str, str]
    lineage: str


@dataclass(frozen=True)
class VolumeFacts:
    """A volume as the provider reports it."""

    id: str
    backend: str
    region: str | None
    availability_zone: str | None
    size_gb: int
    tags: Mapping[str, str]
    created_at: str
    status: str = "available"
    token: str | None = None
    # The lineage of the state whose apply created the volume, when the provider recorded it.
    lineage: str | None = None
    attachments: tuple[str, ...] = field(default=())
    # The provider's storage class, such as gp3 on AWS; None where the provider has no types.
    volume_type: str | None = None
    # The name the provider keeps for the volume (AWS: its Name tag), when it keeps one.
    name: str | None = None
    # When the volume was last detached, or created if it never was, as ISO 8601 UTC; None
    # while it is attached or when the provider does not know. `volplan cleanup` reads it.
    idle_since: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """The rules of a backend that the planner needs before any call."""

    # Several nodes may mount one network volume at once (runpod).
    multi_attach: bool = False
    # Nodes can bind-mount folders of their host (`instance_path`).
    instance_volumes: bool = True
    # Regions where nodes can start, preferred first; a run with no location constraint and
    # no network volume goes to the first one.
    regions: tuple[str, ...] = ()
    # A volume attaches only to nodes in its own availability zone (EBS on AWS).
    attach_per_zone: bool = False
    # Stopping a node releases its volumes (terminating an EC2 instance does), so a plan
    # stops the node before it records the detach; otherwise it detaches first.
    stop_releases_volumes: bool = False
    # The maximum number of network volumes one run may mount; None means no limit.
    max_network_mounts: int | None = None


# Backends whose rules differ from the defaults, after dstack's volume documentation: runpod
# lets several runs mount one network volume but a run mounts at most one; runpod, vastai
# and kubernetes have no instance volumes in volplan's rules (dstack added them for
# kubernetes in 0.20.17); an AWS EBS volume attaches only within its availability zone.
_BACKEND_RULES: dict[str, Capabilities] = {
    "runpod": Capabilities(multi_attach=True, instance_volumes=False, max_network_mounts=1),
    "vastai": Capabilities(instance_volumes=False),
    "kubernetes": Capabilities(instance_volumes=False),
    "aws": Capabilities(attach_per_zone=True),
}


def backend_rules(backend: str) -> Capabilities:
    """Return the product's rules for `backend`, the same whichever provider serves it."""
    return _BACKEND_RULES.get(backend, Capabilities())


@dataclass(frozen=True)
class NodeSpec:
    """The fields of a run's node that a start needs."""

    address: str
    run: str
    rank: int
    backend: str
    region: str
    availability_zone: str | None
    lineage: str


@dataclass(frozen=True)
class MountFacts:
    """A mount that a provider reports on a node: a network volume or a host folder."""

    path: str
    volume_id: str | None = None
    instance_path: str | None = None


@dataclass(frozen=True)
class NodeFacts:
    """A node as the provider reports it, with the mounts it has now."""

    id: str
    backend: str
    region: str
    availability_zone: str | None
    created_at: str
    token: str | None = None
    mounts: Mapping[str, MountFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class MountSpec:
    """One mount on one node: `volume_id` for a network volume, `instance_path` for a host folder."""

    node_id: str
    path: str
    backend: str
    volume_id: str | None = None
    instance_path: str | None = None
    # The node's region, for providers whose API is regional; None in records made before it was kept.
    region: str | None = None

    @property
    def source(self) -> str:
        return self.volume_id or f"instance path {self.instance_path}"


class Provider(ABC):
    """A place where volumes live. `kind` is recorded in the state with every resource.

    The `region` and `regions` arguments carry the region that the state or the configuration
    records for a volume. A provider whose API is regional sends each call there, and one
    without regions ignores them.
    """

    kind: str

    @abstractmethod
    def describe(self) -> str:
        """Return one line for the plan header, such as 'local provider at /home/me/.local/share/volplan'."""

    @abstractmethod
    def capabilities(self, backend: str) -> Capabilities: ...

    @abstractmethod
    def refresh_volumes(
        self, volume_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, VolumeFacts]:
        """Read many volumes at once. Ids the provider does not have are absent from the result."""

    @abstractmethod
    def read_volume(self, volume_id: str, region: str | None = None) -> VolumeFacts:
        """Read one volume, raising VolumeNotFound when it does not exist."""

    @abstractmethod
    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        """Create a volume; a second call with the same token returns the first volume."""

    @abstractmethod
    def update_volume(
        self,
        volume_id: str,
        *,
        size_gb: int | None,
        tags: Mapping[str, str] | None,
        region: str | None = None,
        name: str | None = None,
    ) -> VolumeFacts:
        """Grow a volume, replace its user tags and rename it (AWS: the Name tag) in place."""

    @abstractmethod
    def delete_volume(self, volume_id: str, region: str | None = None) -> None:
        """Delete a volume with its data; a volume that is already gone counts as deleted."""

    @abstractmethod
    def find_volumes_by_token(
        self, tokens: Iterable[str], regions: Iterable[str | None] = ()
    ) -> dict[str, VolumeFacts]:
        """Find volumes made by interrupted creates, by their idempotency tokens, in `regions`."""

    # Run nodes and mounts. The defaults raise ProviderError, so providers that serve only
    # volumes need not implement them.

    def start_node(self, spec: NodeSpec, token: str) -> NodeFacts:
        """Start a node (an instance); a second call with the same token returns the first node."""
        raise self._no_nodes("start nodes")

    def stop_node(self, node_id: str, region: str | None = None) -> None:
        """Stop a node and release it; a node that is already gone counts as stopped.

        Unless the backend's capabilities set `stop_releases_volumes`, the caller detaches the
        node's volumes first, and a provider may reject a stop while volumes are attached.
        """
        raise self._no_nodes("stop nodes")

    def refresh_nodes(
        self, node_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, NodeFacts]:
        """Read many nodes and their mounts at once. Ids the provider does not have are absent."""
        raise self._no_nodes("read nodes")

    def find_nodes_by_token(self, tokens: Iterable[str], regions: Iterable[str | None] = ()) -> dict[str, NodeFacts]:
        """Find nodes started by interrupted starts, by their idempotency tokens, in `regions`."""
        return {}

    def attach_volume(self, mount: MountSpec) -> None:
        """Mount a network volume or a host folder at `mount.path` on the node.

        Attaching what is already attached there succeeds. A network volume attached to another
        node raises ProviderError naming the holder, unless the backend allows multi-attach.
        """
        raise self._no_nodes("attach volumes")

    def detach_volume(self, mount: MountSpec, *, force: bool) -> bool:
        """Start a detach and return True once the mount is gone, False while it is in progress.

        The caller polls by calling again (with backoff) and may set `force` when its patience
        ends; a forced detach always finishes at once. Detaching what is not attached returns
        True.
        """
        raise self._no_nodes("detach volumes")

    def _no_nodes(self, what: str) -> ProviderError:
        return ProviderError(
            "Runs not supported by this provider",
            f"the {self.kind} provider cannot {what} yet. Serve the run's backend with the local provider "
            "(--provider BACKEND=local), or remove the run's configuration.",
        )

    def find_leftovers(self) -> list[str]:
        """Describe what interrupted calls left behind outside any volume, changing nothing.

        Providers whose calls leave nothing behind (the cloud finishes or undoes them) keep the
        default, which finds nothing.
        """
        return []

    def remove_leftovers(self) -> list[str]:
        """Remove what interrupted calls left behind outside any volume; describe each removal."""
        return []
