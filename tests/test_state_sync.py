"""state pull and state push between a local file and an S3 state on moto's server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from engine.project import load_project
from engine.workflow import PlanOptions, Workspace, apply
from providers.base import VolumeFacts, VolumeSpec
from providers.local import LocalProvider
from providers.registry import ProviderSet
from state.s3_location import S3Location
from state.s3_store import open_s3_store
from state.storage import StateWriteError
from tests.conftest import run, volume_file
from tests.s3_server import S3

KEY = "prod/volplan.state.json"


def _applied(project: Path, s3: S3) -> bytes:
    volume_file(project, "data")
    result = run(project, "--state", s3.url(KEY), "apply", "-y")
    assert result.exit_code == 0, result.output
    return s3.body(KEY)


def test_pull_push_round_trip(project: Path, local_root: Path, s3: S3, tmp_path: Path) -> None:
    original = _applied(project, s3)
    etag = s3.etag(KEY)
    pulled = tmp_path / "pulled.json"

    pull = run(project, "--state", s3.url(KEY), "state", "pull", str(pulled))
    same = run(project, "--state", s3.url(KEY), "state", "push", str(pulled))
    copy = run(project, "--state", s3.url("copy/volplan.state.json"), "state", "push", str(pulled))

    assert pull.exit_code == 0, pull.output
    assert pulled.read_bytes() == original
    assert same.exit_code == 0, same.output
    assert "nothing to push" in same.stdout
    assert s3.etag(KEY) == etag
    assert copy.exit_code == 0, copy.output
    assert s3.body("copy/volplan.state.json") == original


def test_push_newer_serial_byte_for_byte(project: Path, local_root: Path, s3: S3, tmp_path: Path) -> None:
    state = json.loads(_applied(project, s3))
    state["serial"] += 1
    # Not volplan's own layout: push must keep the bytes as they are.
    text = json.dumps(state, separators=(",", ":")) + "\n"
    newer = tmp_path / "newer.json"
    newer.write_text(text)

    pushed = run(project, "--state", s3.url(KEY), "state", "push", str(newer))
    printed = run(project, "--state", s3.url(KEY), "state", "pull")

    assert pushed.exit_code == 0, pushed.output
    assert f"(serial {state['serial']})" in pushed.stdout
    assert s3.body(KEY) == text.encode()
    assert printed.stdout == text
    assert s3.keys(f"{KEY}.lock") == []


def test_push_other_lineage_rejected(project: Path, local_root: Path, s3: S3, tmp_path: Path) -> None:
    original = _applied(project, s3)
    state = json.loads(original)
    remote_lineage = state["lineage"]
    state["lineage"] = str(uuid.uuid4())
    state["serial"] += 10
    other = tmp_path / "other.json"
    other.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")

    rejected = run(project, "--state", s3.url(KEY), "state", "push", str(other))
    forced = run(project, "--state", s3.url(KEY), "state", "push", str(other), "--force")

    assert rejected.exit_code == 1
    assert "Different lineage" in rejected.stderr
    assert remote_lineage in rejected.stderr
    assert state["lineage"] in rejected.stderr
    assert "--force" in rejected.stderr
    assert "Traceback" not in rejected.output
    assert forced.exit_code == 0, forced.output
    assert s3.body(KEY) == other.read_bytes()
    assert s3.body(f"{KEY}.backup") == original


def test_push_older_serial_rejected(project: Path, local_root: Path, s3: S3, tmp_path: Path) -> None:
    pulled = tmp_path / "pulled.json"
    _applied(project, s3)
    assert run(project, "--state", s3.url(KEY), "state", "pull", str(pulled)).exit_code == 0
    volume_file(project, "logs")
    assert run(project, "--state", s3.url(KEY), "apply", "-y").exit_code == 0
    newer = s3.body(KEY)

    rejected = run(project, "--state", s3.url(KEY), "state", "push", str(pulled))

    assert rejected.exit_code == 1
    assert "Older serial" in rejected.stderr
    assert "serial 3, newer than serial 2" in rejected.stderr
    assert s3.body(KEY) == newer


def test_pull_other_lineage_rejected(project: Path, local_root: Path, s3: S3) -> None:
    _applied(project, s3)
    volume_file(project, "local-only")
    assert run(project, "apply", "-y").exit_code == 0
    local = (project / "volplan.state.json").read_bytes()

    rejected = run(project, "--state", s3.url(KEY), "state", "pull", "volplan.state.json")

    assert rejected.exit_code == 1
    assert "Different lineage" in rejected.stderr
    assert (project / "volplan.state.json").read_bytes() == local


def test_pull_missing_state(project: Path, s3: S3) -> None:
    result = run(project, "--state", s3.url(KEY), "state", "pull")

    assert result.exit_code == 1
    assert "No state to pull" in result.stderr
    assert s3.url(KEY) in result.stderr


class _RacingProvider(LocalProvider):
    """The local provider, plus another writer that replaces the S3 state during the first create."""

    def __init__(self, root: Path, location: S3Location, errored_folder: Path) -> None:
        super().__init__(root)
        self.other = open_s3_store(location, errored_folder)
        self.raced = False

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        if not self.raced:
            self.raced = True
            state = self.other.read()
            assert state is not None
            state.serial += 1
            self.other.write(state)
        return super().create_volume(spec, token)


def test_apply_with_stale_etag_keeps_both(project: Path, local_root: Path, s3: S3, tmp_path: Path) -> None:
    _applied(project, s3)
    volume_file(project, "logs")
    location = S3Location(s3.bucket, KEY)
    provider = _RacingProvider(local_root, location, tmp_path)
    workspace = Workspace(
        project, open_s3_store(location, project), ProviderSet(factory=lambda kind, options: provider)
    )

    try:
        apply(
            workspace,
            load_project(project),
            PlanOptions(),
            command="test",
            lock_timeout=0,
            parallelism=1,
            confirm=lambda prepared: True,
        )
    except StateWriteError as error:
        raised = error
    else:
        raise AssertionError("the apply overwrote a state written after it read it")

    assert raised.title == "State changed since it was read"
    assert "volplan state push" in raised.detail
    errored = json.loads((project / "errored.volplan.state.json").read_text())
    assert [record["address"] for record in errored["resources"]] == ["volume.data", "volume.logs"]
    stored = json.loads(s3.body(KEY))
    assert [record["address"] for record in stored["resources"]] == ["volume.data"]
    assert s3.keys(f"{KEY}.journal/") != []
