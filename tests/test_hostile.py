"""Hostile input, case by case: template sandbox attacks, path escapes, planted links, secrets in
outputs, file modes and resource limits. tests/test_fuzz.py covers the same ground at random."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import pytest

import engine.mounts
import engine.project
from engine.config import parse_configuration
from engine.documents import MAX_FILE_BYTES, load_document
from engine.errors import ProviderError, StateError, VolumeNotFound
from engine.project import load_project
from engine.run_config import MAX_RUN_NODES
from engine.templates import MAX_SEQUENCE_LENGTH, TemplateError, render_sandboxed, render_volume_name
from engine.workflow import PlanOptions, Workspace, apply
from providers.base import Capabilities, Provider, VolumeFacts, VolumeSpec
from providers.local import LocalProvider
from providers.local_paths import path_inside_root
from providers.registry import ProviderSet
from state.journal import Journal
from state.model import parse_state
from state.store import LocalStateStore
from tests.conftest import run, run_process, volume_file, write
from tests.hostile_inputs import check_document

STATE = "volplan.state.json"


def _task(volumes: str, nodes: int = 2) -> bytes:
    return f"type: task\nnodes: {nodes}\ncommands: [train]\nvolumes: {volumes}\n".encode()


def _problems(raw: bytes) -> list[str]:
    document, issues = load_document("t.dstack.yml", raw)
    assert document is not None, issues
    _, config_issues = parse_configuration(document)
    return [issue.format() for issue in issues + config_issues]


# Template sandbox

SANDBOX_ATTACKS = [
    ("${{ ''.__class__.__mro__ }}", "sandbox"),
    ("${{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
    ("${{ dstack.__class__.__init__.__globals__ }}", "sandbox"),
    ("${{ dstack.node_rank.__class__ }}", "sandbox"),
    ("${{ self }}", "string or a number"),
    ("${{ self.__dict__ }}", "sandbox"),
    ("${{ self._TemplateReference__context }}", "sandbox"),
    ("${{ cycler }}", "unknown variable cycler"),
    ("${{ cycler.__init__.__globals__.os }}", "sandbox"),
    ("${{ joiner }}", "unknown variable joiner"),
    ("${{ namespace() }}", "unknown variable namespace"),
    ("${{ lipsum() }}", "unknown variable lipsum"),
    ("${{ config }}", "unknown variable config"),
    ("${{ range(10**9)|length }}", "call argument above"),
    ("${{ range }}", "string or a number"),
    ("${{ '{0.__class__}'.format(dstack) }}", "sandbox"),
    ("${{ '{0}'.format_map({}) }}", "sandbox"),
    ("${{ '%s' % dstack }}", "formatting with %"),
    ("${{ 'x'|attr('__class__') }}", "No filter named 'attr'"),
    ("${{ 'x'|format(1) }}", "No filter named 'format'"),
    ("${{ ('x' * 100000).replace('x', 'xy') }}", "longer than"),
    ("${{ ('a' * 1000).replace('', 'b' * 100) }}", "longer than"),
    ("${{ ('\t' * 1000).expandtabs(1000) }}", "sandbox"),
    ("${{ ('x' * 1000).join('y' * 1000) }}", "sandbox"),
    ("${{ [[1] * 1000] * 1000 }}", "repeating a list"),
    ("${{ 'x' * 100001 }}", "longer than"),
    ("${{ ('x' * 60000) + ('y' * 60000) }}", "longer than"),
    ("${{ 10 ** 100000 }}", "power above"),
    ("${{ (2 ** 4000) * (2 ** 4000) }}", "product above"),
    ("${{ ('x' * 10).center(10**6) }}", "call argument above"),
]


@pytest.mark.parametrize(("template", "words"), SANDBOX_ATTACKS)
def test_sandbox_attack_rejected(template: str, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_sandboxed(template, 1)

    assert words in caught.value.problem


@pytest.mark.parametrize(
    "template",
    ["${{ ('x' * 100000)|length }}", "${{ ('x' * 50000).ljust(100000)|length }}", "${{ (10**1000)|string|length }}"],
)
def test_bounded_expressions_still_render(template: str) -> None:
    assert render_volume_name(template, 0).isdigit()


def test_rendering_size_bounded() -> None:
    largest = "${{ ('x' * 100000) ~ 'y' }}"

    with pytest.raises(TemplateError) as caught:
        render_sandboxed(largest, 0)

    assert f"more than the {MAX_SEQUENCE_LENGTH}" in caught.value.problem


def test_rendering_time_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.mounts, "RENDER_TIME_LIMIT", 0.0)

    problems = _problems(_task("['data-${{ dstack.node_rank + 1 }}:/data']", nodes=50))

    assert len(problems) == 1
    assert "t.dstack.yml:4:11: volumes[0]: took more than 0 seconds to render" in problems[0]


def test_node_count_bounded() -> None:
    problems = _problems(_task("['data-${{ dstack.node_rank }}:/data']", nodes=100_000_000))

    assert len(problems) == 1
    assert f"asks for 100,000,000 nodes, more than the {MAX_RUN_NODES:,}" in problems[0]
    assert problems[0].startswith("t.dstack.yml:2:8: nodes:")


# Paths in configurations


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("data:/data/../etc", "must not contain .."),
        ("data:../data", "must be an absolute path"),
        ("data:~/data", "must be an absolute path"),
        ("data:data", "must be an absolute path"),
        ("data:./x", "must be an absolute path"),
        ("/host/../etc:/data", "must not contain .."),
        ("~/cache:/cache", "must be an absolute path"),
        ("./cache:/cache", "must be an absolute path"),
        ("{instance_path: ../cache, path: /cache}", "must be an absolute path"),
        ("{instance_path: /mnt/../../etc, path: /cache}", "must not contain .."),
        ("{instance_path: '~root/x', path: /cache}", "must be an absolute path"),
        ("{name: data, path: /a/../../b}", "must not contain .."),
        ("{name: data, path: 'x/y'}", "must be an absolute path"),
        ('{name: data, path: "/data\\0"}', "NUL"),
        ("{name: ../../etc, path: /data}", "not a valid volume name"),
        ("{name: 'a/b', path: /data}", "not a valid volume name"),
        ('{name: "data\\0", path: /data}', "NUL"),
    ],
)
def test_mount_path_rejected(entry: str, problem: str) -> None:
    problems = _problems(_task(f"[{entry}]"))

    assert len(problems) == 1, problems
    assert problem in problems[0]
    assert problems[0].startswith("t.dstack.yml:4:")


def test_double_slash_path_normalised() -> None:
    config = check_document(_task("['data:/data', 'logs://logs/x/']"))

    assert config is not None
    assert [mount.path for mount in config.mounts] == ["/data", "/logs/x"]  # type: ignore[attr-defined]


def test_config_link_outside_project_rejected(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yml"
    outside.write_text("type: volume\nname: leak\nbackend: aws\nregion: x\nsize: 1\n")
    (project / "leak.dstack.yml").symlink_to(outside)

    result = run(project, "validate")

    assert result.exit_code == 1
    assert f"leak.dstack.yml: is a symbolic link to {outside}, outside the project folder" in result.stderr


def test_config_link_inside_project_read(project: Path) -> None:
    volume_file(project, "data")
    (project / "copy").mkdir()
    (project / "copy" / "other.dstack.yml").symlink_to(project / "data.dstack.yml")

    result = run(project, "validate")

    assert result.exit_code == 1
    assert "data.dstack.yml:2:7: name: is already the name of the volume in copy/other.dstack.yml:2" in result.stderr


@pytest.mark.parametrize("special", ["fifo", "zero"])
def test_special_config_file_not_read(project: Path, local_root: Path, special: str) -> None:
    path = project / "special.dstack.yml"
    if special == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")

    # A real process: reading a FIFO would block and /dev/zero would never end.
    result = run_process(project, "validate", env={"VOLPLAN_LOCAL_ROOT": str(local_root)}, timeout=30)

    assert result.returncode == 1, result.stderr
    expected = "is not a regular file" if special == "fifo" else "is a symbolic link to /dev/zero"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


# The local provider's root


def _files_under(folder: Path) -> set[str]:
    return {str(path) for path in folder.rglob("*")}


@pytest.mark.parametrize("name", ["../../escape", "a/b", "x\x00y", "..", "/etc/passwd", "vol-../../x"])
def test_hostile_volume_name_stays_inside_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    provider = LocalProvider(root)
    before = _files_under(tmp_path)

    facts = provider.create_volume(VolumeSpec(f"volume.{name}", name, "aws", "x", None, 1, {}, "l"), "token")

    created = _files_under(tmp_path) - before
    assert created
    assert all(path == str(root) or path.startswith(str(root) + os.sep) for path in created)
    assert provider.read_volume(facts.id).id == facts.id
    metadata = json.loads((root / facts.id / "volume.json").read_text())
    assert metadata["name"] == name


@pytest.mark.parametrize(
    "volume_id", ["../../etc", "vol-0123456789abcdef0/../../x", "vol-0123456789abcdef0\x00", "/etc", "", ".."]
)
def test_hostile_volume_id_never_reaches_disk(provider: LocalProvider, volume_id: str) -> None:
    with pytest.raises(VolumeNotFound):
        provider.read_volume(volume_id)
    with pytest.raises(VolumeNotFound):
        provider.update_volume(volume_id, size_gb=5, tags=None)
    with pytest.raises(VolumeNotFound):
        provider.delete_volume(volume_id)
    with pytest.raises(VolumeNotFound):
        provider.volume_data_path(volume_id)


def _create(provider: LocalProvider, name: str = "data") -> str:
    spec = VolumeSpec(f"volume.{name}", name, "aws", "eu-central-1", None, 10, {}, "lineage")
    return provider.create_volume(spec, uuid.uuid4().hex).id


def test_linked_volume_folder_refused(local_root: Path, tmp_path: Path) -> None:
    provider = LocalProvider(local_root)
    volume_id = _create(provider)
    outside = tmp_path / "outside"
    (local_root / volume_id).rename(outside)
    (local_root / volume_id).symlink_to(outside)
    fresh = LocalProvider(local_root)

    with pytest.raises(ProviderError, match="Unexpected symbolic link"):
        fresh.read_volume(volume_id)
    with pytest.raises(ProviderError, match="Unexpected symbolic link"):
        fresh.refresh_volumes([volume_id])
    with pytest.raises(ProviderError, match="Unexpected symbolic link"):
        fresh.delete_volume(volume_id)
    assert (outside / "volume.json").is_file()


@pytest.mark.parametrize("inner", ["volume.json", "data"])
def test_link_inside_volume_refused(local_root: Path, tmp_path: Path, inner: str) -> None:
    provider = LocalProvider(local_root)
    volume_id = _create(provider)
    target = tmp_path / "target"
    target.mkdir()
    (target / "volume.json").write_text((local_root / volume_id / "volume.json").read_text())
    planted = local_root / volume_id / inner
    if planted.is_dir():
        planted.rmdir()
    else:
        planted.unlink()
    planted.symlink_to(target / inner if inner == "volume.json" else target)

    with pytest.raises(ProviderError, match="Unexpected symbolic link"):
        if inner == "data":
            provider.volume_data_path(volume_id)
        else:
            provider.update_volume(volume_id, size_gb=20, tags=None)
    assert json.loads((target / "volume.json").read_text())["size_gb"] == 10


def test_linked_index_refused(local_root: Path, tmp_path: Path) -> None:
    local_root.mkdir()
    victim = tmp_path / "victim.sqlite"
    victim.write_bytes(b"keep me")
    (local_root / "index.sqlite").symlink_to(victim)

    with pytest.raises(ProviderError, match="Unexpected symbolic link"):
        LocalProvider(local_root).refresh_volumes(["vol-0123456789abcdef0"])
    assert victim.read_bytes() == b"keep me"


def test_damaged_index_rebuilt(local_root: Path) -> None:
    volume_id = _create(LocalProvider(local_root))
    (local_root / "index.sqlite").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (local_root / f"index.sqlite{suffix}").unlink(missing_ok=True)

    found = LocalProvider(local_root).refresh_volumes([volume_id])

    assert list(found) == [volume_id]
    assert list(local_root.glob("index.sqlite.damaged-*"))


@pytest.mark.parametrize(
    "metadata",
    [b"{", b"[]", b'{"id": 1}', b"null", b'{"id": "vol-00000000000000000", "backend": "aws"}', b"\xff\xfe"],
)
def test_damaged_volume_metadata_reported(local_root: Path, metadata: bytes) -> None:
    volume_id = _create(LocalProvider(local_root))
    (local_root / volume_id / "volume.json").write_bytes(metadata)

    with pytest.raises(ProviderError, match="Damaged local volume"):
        LocalProvider(local_root).read_volume(volume_id)
    with pytest.raises(ProviderError, match="Damaged local volume"):
        LocalProvider(local_root).refresh_volumes([volume_id])


def test_damaged_volume_stops_plan(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    assert run(project, "apply", "-y").exit_code == 0
    volume_id = json.loads((project / STATE).read_text())["resources"][0]["id"]
    (local_root / volume_id / "volume.json").write_text("{}")
    state_before = (project / STATE).read_bytes()

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "Damaged local volume" in result.stderr
    assert (project / STATE).read_bytes() == state_before


def test_recorded_link_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "vol-0123456789abcdef0" / "data").mkdir(parents=True)
    (root / "host-1").mkdir()
    (root / "host-1" / "mnt").symlink_to("../vol-0123456789abcdef0/data")
    recorded = {PurePosixPath("host-1/mnt"): "../vol-0123456789abcdef0/data"}

    path = path_inside_root(root, "host-1/mnt/file.txt", recorded)

    assert path == root / "host-1" / "mnt" / "file.txt"
    with pytest.raises(ProviderError, match="did not make"):
        path_inside_root(root, "host-1/mnt/file.txt")


def test_changed_recorded_link_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "host-1").mkdir(parents=True)
    (root / "host-1" / "mnt").symlink_to(tmp_path)

    with pytest.raises(ProviderError, match="did not make"):
        path_inside_root(root, "host-1/mnt", {PurePosixPath("host-1/mnt"): "../vol-0123456789abcdef0/data"})
    with pytest.raises(ProviderError, match="outside the local provider's root"):
        path_inside_root(root, "host-1/mnt/x", {PurePosixPath("host-1/mnt"): str(tmp_path)})


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc", "a\x00b", "", ".", "a\\b"])
def test_invalid_relative_path_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ProviderError, match="Invalid local path"):
        path_inside_root(tmp_path, relative)


# Files beside the state


@pytest.mark.parametrize("planted", [f"{STATE}.journal", f"{STATE}.lock"])
def test_planted_link_beside_state_refused(project: Path, tmp_path: Path, planted: str) -> None:
    volume_file(project, "data")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (project / planted).symlink_to(victim)

    result = run(project, "apply", "-y")

    assert result.exit_code == 1
    assert "is a symbolic link; volplan writes only regular files beside the state" in result.stderr
    assert victim.read_text() == "keep me\n"
    assert not (project / STATE).exists()


@pytest.mark.parametrize("state", ["/", ".", "sub/.."])
def test_state_option_naming_folder(project: Path, state: str) -> None:
    volume_file(project, "data")

    result = run(project, "--state", state, "plan")

    assert result.exit_code == 1
    assert "Error:" in result.stderr
    assert "internal error" not in result.stderr


def test_empty_out_path(project: Path) -> None:
    volume_file(project, "data")

    result = run(project, "plan", "-out=")

    assert result.exit_code == 1
    assert "Cannot write the plan file" in result.stderr


# Secrets and file modes

FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE7777",
    "AWS_SECRET_ACCESS_KEY": "fakeSecretKey/9999/DoNotLeak+abcdefghijklm",
    "AWS_SESSION_TOKEN": "FakeSessionToken//ZZZZ1234567890+volplanleak",
}


class JournalCopier(Provider):
    """The real local provider, copying the journal after every create so the test can read it."""

    kind = "local"

    def __init__(self, inner: LocalProvider, journal: Path) -> None:
        self.inner = inner
        self.journal = journal
        self.copies: list[bytes] = []

    def describe(self) -> str:
        return self.inner.describe()

    def capabilities(self, backend: str) -> Capabilities:
        return self.inner.capabilities(backend)

    def refresh_volumes(self, volume_ids: Iterable[str]) -> dict[str, VolumeFacts]:
        return self.inner.refresh_volumes(volume_ids)

    def read_volume(self, volume_id: str) -> VolumeFacts:
        return self.inner.read_volume(volume_id)

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        facts = self.inner.create_volume(spec, token)
        self.copies.append(self.journal.read_bytes())
        self.copies.append(oct(stat.S_IMODE(self.journal.stat().st_mode)).encode())
        return facts

    def update_volume(self, volume_id: str, *, size_gb: int | None, tags: Mapping[str, str] | None) -> VolumeFacts:
        return self.inner.update_volume(volume_id, size_gb=size_gb, tags=tags)

    def delete_volume(self, volume_id: str) -> None:
        self.inner.delete_volume(volume_id)

    def find_volumes_by_token(self, tokens: Iterable[str]) -> dict[str, VolumeFacts]:
        return self.inner.find_volumes_by_token(tokens)


def _assert_no_secret(where: str, data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for name, value in FAKE_SECRETS.items():
        assert value not in text, f"{name} leaked into {where}"
        assert value[:12] not in text, f"the start of {name} leaked into {where}"


def test_secrets_reach_no_output(project: Path, local_root: Path, tmp_path: Path) -> None:
    env = {**FAKE_SECRETS, "VOLPLAN_LOCAL_ROOT": str(local_root), "TMPDIR": str(tmp_path)}
    write(project, "volplan.yml", "providers:\n  aws:\n    kind: local\n")
    volume_file(project, "data-0")
    volume_file(project, "data-1")
    volume_file(project, "logs", extra="tags: {owner: ml}\n")
    write(
        project,
        "train.dstack.yml",
        "type: task\nnodes: 2\ncommands: [x]\nvolumes: ['data-$<< dstack.node_rank >>:/data']\n",
    )
    outputs: list[tuple[str, str]] = []

    for args in (
        ["-vv", "plan", "-out=release.plan"],
        ["-vv", "apply", "release.plan"],
        ["-vv", "plan", "--json"],
        ["validate", "--json"],
        ["-vv", "drift"],
        ["volume", "list", "-v"],
        ["-vv", "refresh", "-y"],
    ):
        result = run_process(project, *args, env=env)
        assert result.returncode in (0, 2), (args, result.stderr)
        outputs.append((" ".join(args), result.stdout + result.stderr))

    # Error paths: a template naming the secrets, a damaged state, an unknown flag.
    write(project, "bad.dstack.yml", "type: task\ncommands: [x]\nvolumes: ['${{ env.AWS_SECRET_ACCESS_KEY }}:/d']\n")
    failing = run_process(project, "-vv", "plan", env=env)
    assert failing.returncode == 1
    outputs.append(("plan with a bad template", failing.stdout + failing.stderr))
    (project / "bad.dstack.yml").unlink()
    (project / STATE).write_text((project / STATE).read_text()[:-20])
    damaged = run_process(project, "-vv", "apply", "-y", "--bogus", env=env)
    outputs.append(("unknown flag", damaged.stdout + damaged.stderr))
    damaged = run_process(project, "-vv", "apply", "-y", env=env)
    assert damaged.returncode == 1
    outputs.append(("damaged state", damaged.stdout + damaged.stderr))

    for where, text in outputs:
        _assert_no_secret(where, text)
    for folder in (project, local_root, tmp_path):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix != ".sqlite-shm":
                _assert_no_secret(str(path), path.read_bytes())


def test_journal_holds_no_secret(project: Path, local_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    volume_file(project, "data")
    volume_file(project, "logs")
    copier = JournalCopier(LocalProvider(local_root), project / f"{STATE}.journal")
    workspace = Workspace(project, LocalStateStore(project / STATE), ProviderSet(factory=lambda kind, options: copier))

    apply(
        workspace,
        load_project(project),
        PlanOptions(),
        command="test",
        lock_timeout=0,
        parallelism=1,
        confirm=lambda prepared: True,
    )

    assert len(copier.copies) == 4
    assert copier.copies[1] == b"0o600"
    assert b'"intent"' in copier.copies[2]
    for copy in copier.copies:
        _assert_no_secret("the journal", copy)


def test_state_plan_journal_modes(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    previous = os.umask(0)
    try:
        assert run(project, "plan", "--out", str(project / "saved.plan")).exit_code == 0
        assert run(project, "apply", str(project / "saved.plan")).exit_code == 0
        volume_file(project, "data", size="200GB")
        assert run(project, "apply", "-y").exit_code == 0
        journal = Journal(project / "other.journal", str(uuid.uuid4()))
        journal.close()
    finally:
        os.umask(previous)

    for name in (STATE, f"{STATE}.backup", f"{STATE}.lock", "saved.plan", "other.journal"):
        assert stat.S_IMODE((project / name).stat().st_mode) == 0o600, name


# Resource limits


def test_oversized_file_fails_fast(project: Path) -> None:
    with open(project / "big.dstack.yml", "wb") as handle:
        handle.write(b"type: volume\nname: " + b"x" * MAX_FILE_BYTES + b"\n")

    result = run(project, "validate")

    assert result.exit_code == 1
    assert "big.dstack.yml: is larger than the 10 MB limit." in result.stderr


def test_file_count_limit(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.project, "MAX_CONFIG_FILES", 3)
    for index in range(4):
        volume_file(project / f"f{index}", f"v{index}")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert "Too many configuration files" in result.stderr
    assert "more than 3 configuration files" in result.stderr


def test_alias_bomb_through_cli(project: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    write(project, "bomb.dstack.yml", "\n".join(levels) + "\ntype: volume\n")

    result = run(project, "validate")

    assert result.exit_code == 1
    assert "bomb.dstack.yml: expands to more than 200000 YAML nodes" in result.stderr


# Real processes


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        (b"type: volume\n\tname: x\n", ["validate"], "x.dstack.yml:2:1: is not valid YAML"),
        (b"type: volume\nname: a\nname: b\n", ["plan"], "x.dstack.yml:3:1: name: is a duplicate key"),
        (b"type: volume\n---\ntype: task\n", ["apply", "-y"], "x.dstack.yml:2:1: contains several YAML documents"),
        (b"\xff\xfetype: volume\n", ["plan", "--json"], "x.dstack.yml: is not valid UTF-8"),
        (b"type: !!timestamp volume\n", ["validate"], "x.dstack.yml:1:7: has a value that cannot be read"),
    ],
)
def test_hostile_file_in_real_process(
    project: Path, local_root: Path, text: bytes, args: list[str], expected: str
) -> None:
    volume_file(project, "data")
    assert run(project, "apply", "-y").exit_code == 0
    state_before = (project / STATE).read_bytes()
    (project / "x.dstack.yml").write_bytes(text)

    result = run_process(project, *args, env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert (project / STATE).read_bytes() == state_before


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-out="],
        ["--state", "/", "plan"],
        ["apply", "-parallelism=-1", "-y"],
        ["plan", "-lock-timeout=1h30m"],
        ["apply", "-lock-timeout=1h30m", "-y"],
        ["volume", "get", "../../etc"],
        ["--provider", "aws=evil", "plan"],
        ["apply", "-f", "/etc/passwd", "-y"],
        ["destroy", "-input=false"],
        ["plan", "-f", "x" * 300],
        ["-C", "x" * 300, "plan"],
        ["--state", "x" * 300, "plan"],
    ],
)
def test_hostile_flags_in_real_process(project: Path, local_root: Path, args: list[str]) -> None:
    volume_file(project, "data")
    assert run(project, "apply", "-y").exit_code == 0
    state_before = (project / STATE).read_bytes()

    result = run_process(project, *args, env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("Error:") or "\nError:" in result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert (project / STATE).read_bytes() == state_before


def test_damaged_state_in_real_process(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    assert run(project, "apply", "-y").exit_code == 0
    state = json.loads((project / STATE).read_text())
    state["resources"][0]["tags"] = {"owner": 7}
    damaged = json.dumps(state, indent=2, sort_keys=True).encode()
    (project / STATE).write_bytes(damaged)

    result = run_process(project, "apply", "-y", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert result.returncode == 1
    assert f"{project / STATE}:" in result.stderr
    assert 'tags is {"owner": 7}, expected a mapping of strings' in result.stderr
    assert (project / STATE).read_bytes() == damaged
    assert not (project / f"{STATE}.backup").exists()


def test_state_error_names_line() -> None:
    text = json.dumps(
        {
            "version": 1,
            "lineage": str(uuid.uuid4()),
            "serial": 1,
            "resources": [
                {
                    "address": "volume.a",
                    "kind": "volume",
                    "name": "a",
                    "id": "vol-1",
                    "provider": "local",
                    "backend": "aws",
                    "external": False,
                    "size_gb": True,
                }
            ],
        },
        indent=2,
    )

    with pytest.raises(StateError) as caught:
        parse_state(text, "s.json")

    assert "s.json:14: resources[0] (volume.a): size_gb is true, expected a number." in caught.value.detail
