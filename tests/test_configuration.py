"""The rules of volume and run configurations, each with the field and line it is reported on."""

from __future__ import annotations

import textwrap

import pytest

from engine.config import parse_configuration
from engine.documents import load_document
from engine.errors import ConfigIssue
from engine.nodes import run_nodes
from engine.run_config import InstanceMount, NetworkMount, RunConfiguration
from engine.volume_config import KubernetesVolumeConfiguration, VolumeConfiguration


def check(text: str) -> tuple[object, list[ConfigIssue]]:
    document, issues = load_document("case.dstack.yml", textwrap.dedent(text).lstrip())
    assert document is not None, issues
    config, more = parse_configuration(document)
    return config, issues + more


def volume(extra: str = "", *, backend: str = "aws", head: str = "name: data\n") -> tuple[object, list[ConfigIssue]]:
    return check(f"type: volume\n{head}backend: {backend}\n{extra}")


@pytest.mark.parametrize(
    ("backend", "extra"),
    [
        ("aws", "region: eu-central-1\nsize: 100GB\n"),
        ("aws", "region: eu-central-1\nvolume_id: vol-123\nauto_cleanup_duration: off\n"),
        ("gcp", "region: europe-west4\navailability_zone: europe-west4-a\nsize: 1TB\n"),
        ("runpod", "region: EU-SE-1\nsize: '100'\navailability_zone: x\n"),
        ("kubernetes", "size: 10GB\nstorage_class_name: nfs\naccess_modes: [ReadWriteMany]\nread_only: true\n"),
        ("kubernetes", "claim_name: existing-pvc\n"),
        ("daytona", ""),
        ("lium", "volume_id: abc\n"),
        ("aws", "region: r\nvolume_id: v\nauto_cleanup_duration: -1\n"),
        ("aws", "region: r\nvolume_id: v\nauto_cleanup_duration: 0\n"),
        ("aws", "region: r\nsize: 1\nauto_cleanup_duration: 1h\ntags: {team: ml, cost-center: '42'}\n"),
    ],
)
def test_volume_accepted(backend: str, extra: str) -> None:
    config, issues = volume(extra, backend=backend)

    assert issues == [], [issue.format() for issue in issues]
    assert isinstance(config, VolumeConfiguration)
    assert config.backend == backend


@pytest.mark.parametrize(
    ("backend", "extra", "field", "line", "words"),
    [
        ("aws", "size: 100GB\n", "region", 1, "is missing"),
        ("gcp", "size: 100GB\n", "region", 1, "is missing"),
        ("aws", "region: r\n", "size", 1, "needs a size"),
        ("kubernetes", "region: r\n", "size", 1, "claim_name"),
        ("aws", "region: r\nvolume_id: v\nauto_cleanup_duration: 1h\n", "auto_cleanup_duration", 6, "external"),
        ("kubernetes", "claim_name: c\nauto_cleanup_duration: 60\n", "auto_cleanup_duration", 5, "external"),
        (
            "aws",
            "region: r\nsize: 1\nclaim_name: c\n",
            "claim_name",
            6,
            "not a field of a volume configuration on backend aws",
        ),
        ("daytona", "size: 10GB\n", "size", 4, "not a field"),
        ("aws", "region: r\nsize: 1\nregoin: x\n", "regoin", 6, "not a field"),
        ("azure", "size: 1\n", "backend", 3, "has no network volumes"),
        ("awz", "size: 1\n", "backend", 3, "is not a dstack backend"),
        ("aws", "region: r\nsize: 1\nauto_cleanup_duration: 1h30m\n", "auto_cleanup_duration", 6, "not a duration"),
        ("aws", "region: 5\nsize: 1\n", "region", 4, "must be a string"),
        ("aws", "region: r\nsize: 1\ntags: {'bad key': x}\n", "tags.bad key", 6, "not a valid tag name"),
        ("aws", "region: r\nsize: 1\ntags: {team: 'a;b'}\n", "tags.team", 6, "not a valid tag value"),
        ("aws", "region: r\nsize: 1\ntags: [a]\n", "tags", 6, "mapping"),
        ("kubernetes", "size: 1\naccess_modes: ReadWriteOnce\n", "access_modes", 5, "valid list"),
    ],
)
def test_volume_rejected(backend: str, extra: str, field: str, line: int, words: str) -> None:
    config, issues = volume(extra, backend=backend)

    assert config is None
    assert [issue.field for issue in issues] == [field]
    assert issues[0].line == line
    assert words in issues[0].problem + issues[0].fix


def test_kubernetes_defaults() -> None:
    config, _ = volume("size: 10GB\n", backend="kubernetes")

    assert isinstance(config, KubernetesVolumeConfiguration)
    assert config.access_modes == ["ReadWriteOnce"]
    assert config.read_only is False
    assert config.region is None


@pytest.mark.parametrize(
    ("head", "words"),
    [
        ("name: data-$<< dstack.node_rank >>\n", "is a template"),
        ("name: data-${{ dstack.node_rank }}\n", "is a template"),
        ("name: Data\n", "not a valid volume name"),
        ("name: d\n", "not a valid volume name"),
        ("name: " + "a" * 42 + "\n", "not a valid volume name"),
        ("name: 12\n", "must be a string"),
    ],
)
def test_volume_name_rules(head: str, words: str) -> None:
    config, issues = volume("region: r\nsize: 1\n", head=head)

    assert config is None
    assert issues[0].field == "name"
    assert words in issues[0].problem


def test_all_volume_errors_collected() -> None:
    config, issues = volume("size: 512MB\nregoin: x\n", head="name: X\n")

    assert config is None
    assert sorted(issue.field for issue in issues) == ["name", "region", "regoin", "size"]


def task(body: str, *, head: str = "type: task\ncommands: [train]\n") -> tuple[object, list[ConfigIssue]]:
    return check(head + textwrap.dedent(body))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("data:/data", NetworkMount(("data",), "/data")),
        ("/mnt/cache:/cache/", InstanceMount("/mnt/cache", "/cache")),
        ("{name: data, path: /data/./x}", NetworkMount(("data",), "/data/x")),
        ("{name: [eu-data, us-data], path: /data}", NetworkMount(("eu-data", "us-data"), "/data")),
        ("{instance_path: /mnt, path: /m, optional: true}", InstanceMount("/mnt", "/m", True)),
        ("/host:/workflow/lib", InstanceMount("/host", "/workflow/lib")),
        ("data:/workflows", NetworkMount(("data",), "/workflows")),
    ],
)
def test_mount_forms(entry: str, expected: object) -> None:
    config, issues = task(f"volumes:\n  - {entry}\n")

    assert issues == [], [issue.format() for issue in issues]
    assert isinstance(config, RunConfiguration)
    assert config.mounts == (expected,)
    assert config.mount_positions == (("volumes", 0),)


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ("data", "volumes[0]", "exactly one colon"),
        ("a:b:/c", "volumes[0]", "exactly one colon"),
        (":/data", "volumes[0]", "exactly one colon"),
        ("data:relative", "volumes[0]", "absolute"),
        ("data:/a/../b", "volumes[0]", ".."),
        ("data:/workflow", "volumes[0]", "reserved"),
        ("data:/workflow/sub", "volumes[0]", "reserved"),
        ("{name: data, path: /workflow/x}", "volumes[0].path", "reserved"),
        ("{name: data, instance_path: /x, path: /y}", "volumes[0].name", "instance_path"),
        ("{name: data, path: /y, optional: true}", "volumes[0].optional", "only on instance mounts"),
        ("{name: data, path: /y, readonly: true}", "volumes[0].readonly", "not a field of a volume mount"),
        ("{instance_path: /x, path: /y, optional: maybe}", "volumes[0].optional", "true or false"),
        ("{name: [], path: /y}", "volumes[0].name", "non-empty list"),
        ("{path: /y}", "volumes[0].name", "is missing"),
        ("{name: data}", "volumes[0].path", "no path"),
        ("42", "volumes[0]", "not a mount"),
        ("Data:/data", "volumes[0]", "not a valid volume name"),
        ("data-$<< dstack.nodes_num >>:/data", "volumes[0]", "unknown variable dstack.nodes_num"),
        ("{name: [ok, 'x-$<< run.name >>'], path: /y}", "volumes[0].name[1]", "unknown variable run.name"),
    ],
)
def test_mount_rejected(entry: str, field: str, words: str) -> None:
    config, issues = task(f"volumes:\n  - {entry}\n")

    assert config is None
    assert [issue.field for issue in issues] == [field]
    assert issues[0].line == 4
    assert words in issues[0].problem


def test_template_checked_for_every_rank() -> None:
    name = "a" * 40 + "$<< dstack.node_rank >>"
    config, issues = task(f"nodes: 11\nvolumes:\n  - {name}:/data\n")

    assert config is None
    assert "node rank 10" in issues[0].problem


def test_task_groups_count_toward_ranks() -> None:
    config, issues = check(
        """
        type: task
        image: ubuntu
        groups:
          - name: workers
            nodes: 2
          - nodes: 3
            commands: [serve]
        volumes:
          - data-$<< dstack.node_rank >>:/data
        """
    )

    assert issues == [], [issue.format() for issue in issues]
    assert isinstance(config, RunConfiguration)
    assert config.nodes == 5
    nodes = run_nodes(config)
    assert [(node.rank, node.group) for node in nodes] == [(0, "workers"), (1, "workers"), (2, "1"), (3, "1"), (4, "1")]
    assert nodes[4].mounts[0].volume_names == ("data-4",)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("type: task\nimage: u\nnodes: 2\ngroups: [{nodes: 1}]\n", "nodes", "together with groups"),
        ("type: task\ngroups: [{nodes: 1}]\n", "groups[0]", "no commands"),
        ("type: task\nimage: u\ngroups: []\n", "groups", "non-empty"),
        ("type: task\nimage: u\ngroups: [{nodes: 0}]\n", "groups[0].nodes", "at least 1"),
        ("type: task\nimage: u\ngroups: [{name: A}]\n", "groups[0].name", "group name"),
        ("type: task\nimage: u\ngroups: [{name: a}, {name: a}]\n", "groups", "two groups named a"),
        ("type: task\nimage: u\ngroups: [{nodes: 1, gpu: 1}]\n", "groups[0].gpu", "not a field of a node group"),
        ("type: task\ncommands: [x]\ngroups: [{commands: [y]}]\n", "commands", "top level"),
        ("type: task\ncommands: [x]\nnodes: 0\n", "nodes", "greater than or equal to 1"),
        ("type: task\n", "commands", "commands or an image"),
        ("type: service\nimage: u\n", "port", "port"),
        ("type: service\nport: 80\n", "commands", "commands or an image"),
        ("type: service\nport: 80\nimage: u\nreplicas: 1..4\n", "replicas", "needs scaling"),
        ("type: service\nport: 80\nimage: u\nreplicas: 1..\n", "replicas", "no maximum"),
        ("type: service\nport: 80\nimage: u\nreplicas: 4..1\n", "replicas", "minimum above"),
        ("type: service\nport: 80\nreplicas: [{count: 1}]\n", "replicas[0]", "no commands or image"),
        ("type: dev-environment\nentrypoint: x\n", "entrypoint", "not supported"),
        ("type: task\ncommands: [x]\nname: Train\n", "name", "not a valid run name"),
        ("type: task\ncommands: [x]\nstop_duration: -5\n", "stop_duration", "negative"),
        ("type: task\ncommands: [x]\nstop_duration: 1h30m\n", "stop_duration", "not a duration"),
        ("type: task\ncommands: [x]\nbackends: [aws, awz]\n", "backends", "Did you mean aws?"),
        ("type: task\ncommands: [x]\nbackends: aws\n", "backends", "valid list"),
        ("type: task\ncommands: [x]\nregions: [1]\n", "regions[0]", "valid string"),
        ("type: task\ncommands: [x]\nreplicas: 2\n", "replicas", "not a field of a task configuration"),
        ("type: taks\n", "type", "Did you mean task?"),
    ],
)
def test_run_rejected(body: str, field: str, words: str) -> None:
    config, issues = check(body)

    assert config is None
    assert [issue.field for issue in issues] == [field]
    assert issues[0].line is not None
    assert words in issues[0].problem + " " + issues[0].fix


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("", 300),
        ("stop_duration: off\n", None),
        ("stop_duration: false\n", None),
        ("stop_duration: true\n", 300),
        ("stop_duration: 90s\n", 90),
        ("stop_duration: '2 m'\n", 120),
        ("stop_duration: 0\n", 0),
    ],
)
def test_stop_duration(value: str, seconds: int | None) -> None:
    config, issues = task(value)

    assert issues == []
    assert isinstance(config, RunConfiguration)
    assert config.stop_duration == seconds


def test_service_replicas_lower_bound() -> None:
    config, issues = check("type: service\nport: 80\nimage: u\nreplicas: 2..4\nscaling: {metric: rps, target: 1}\n")

    assert issues == []
    assert isinstance(config, RunConfiguration)
    assert config.replicas == 2
    assert [node.rank for node in run_nodes(config)] == [0]


def test_placement_fields_read() -> None:
    config, issues = task("backends: [aws, gcp]\nregions: [eu-west-1]\navailability_zones: [eu-west-1a]\n")

    assert issues == []
    assert isinstance(config, RunConfiguration)
    assert (config.backends, config.regions, config.availability_zones) == (
        ("aws", "gcp"),
        ("eu-west-1",),
        ("eu-west-1a",),
    )
