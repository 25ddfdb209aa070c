"""Apply under provider and state-write failures: what succeeded is recorded, nothing recorded
is dropped, and a second apply converges."""

from __future__ import annotations

import errno
import json
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import pytest

from engine.actions import Action
from engine.errors import ProviderError, VolplanError
from engine.project import load_project
from engine.workflow import ApplyOutcome, PlanOptions, Workspace, apply
from providers.base import Capabilities, Provider, VolumeFacts, VolumeSpec
from providers.local import LocalProvider
from providers.registry import ProviderSet
from state.model import State
from state.store import LocalStateStore
from tests.conftest import run, volume_file

T = TypeVar("T")


class FailingProvider(Provider):
    """Wraps the real local provider and fails chosen create calls (counted from 1)."""

    kind = "local"

    def __init__(self, inner: LocalProvider, failing_creates: set[int]) -> None:
        self.inner = inner
        self.failing_creates = failing_creates
        self.creates = 0
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "a failing test wrapper"

    def capabilities(self, backend: str) -> Capabilities:
        return self.inner.capabilities(backend)

    def refresh_volumes(
        self, volume_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, VolumeFacts]:
        return self.inner.refresh_volumes(volume_ids, regions)

    def read_volume(self, volume_id: str, region: str | None = None) -> VolumeFacts:
        return self.inner.read_volume(volume_id, region)

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        with self._lock:
            self.creates += 1
            number = self.creates
        if number in self.failing_creates:
            raise ProviderError("Injected failure", f"create number {number} of {spec.address} fails on purpose")
        return self.inner.create_volume(spec, token)

    def update_volume(
        self, volume_id: str, *, size_gb: int | None, tags: Mapping[str, str] | None, region: str | None = None
    ) -> VolumeFacts:
        return self.inner.update_volume(volume_id, size_gb=size_gb, tags=tags, region=region)

    def delete_volume(self, volume_id: str, region: str | None = None) -> None:
        self.inner.delete_volume(volume_id, region)

    def find_volumes_by_token(
        self, tokens: Iterable[str], regions: Iterable[str | None] = ()
    ) -> dict[str, VolumeFacts]:
        return self.inner.find_volumes_by_token(tokens, regions)


def _workspace(project: Path, provider: Provider) -> Workspace:
    providers = ProviderSet(factory=lambda kind, options: provider)
    return Workspace(project, LocalStateStore(project / "volplan.state.json"), providers)


def test_third_create_fails_others_recorded(project: Path, local_root: Path) -> None:
    for index in range(200):
        volume_file(project, f"v{index:03d}", size="1GB")
    failing = FailingProvider(LocalProvider(local_root), {3})

    outcome = apply(
        _workspace(project, failing),
        load_project(project),
        PlanOptions(),
        command="test",
        lock_timeout=0,
        parallelism=16,
        confirm=lambda prepared: True,
    )

    assert outcome.report is not None
    failed = [r.change.address for r in outcome.report.results if r.status.value == "failed"]
    assert len(failed) == 1
    state = json.loads((project / "volplan.state.json").read_text())
    recorded = {record["address"] for record in state["resources"]}
    assert len(recorded) == 199
    assert failed[0] not in recorded
    on_disk = {p.name for p in local_root.iterdir() if p.name.startswith("vol-")}
    assert on_disk == {record["id"] for record in state["resources"]}

    second = run(project, "apply", "-y", "--parallelism", "16")

    assert second.exit_code == 0, second.output
    assert "Plan: 1 to create." in second.stdout
    state = json.loads((project / "volplan.state.json").read_text())
    assert len(state["resources"]) == 200
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0


def test_failed_step_exit_code_and_summary(project: Path, local_root: Path) -> None:
    volume_file(project, "good")
    volume_file(project, "bad")
    failing = FailingProvider(LocalProvider(local_root), {1})

    outcome = apply(
        _workspace(project, failing),
        load_project(project),
        PlanOptions(),
        command="test",
        lock_timeout=0,
        parallelism=1,
        confirm=lambda prepared: True,
    )

    assert outcome.report is not None
    statuses = {r.change.address: r.status.value for r in outcome.report.results}
    assert statuses == {"volume.bad": "failed", "volume.good": "succeeded"}
    state = json.loads((project / "volplan.state.json").read_text())
    assert [record["address"] for record in state["resources"]] == ["volume.good"]


class FailAtCall(Provider):
    """Wraps the real local provider and fails provider call number `fail_at`, counted from 1.

    The failure comes before the real call runs or after it returns, because a cloud can fail
    either way. A rejected request changes nothing, but a timeout may hide a call that did its work.
    """

    kind = "local"

    def __init__(self, inner: LocalProvider, fail_at: int | None, after: bool) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.after = after
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def _call(self, name: str, call: Callable[[], T]) -> T:
        with self._lock:
            self.calls.append(name)
            number = len(self.calls)
        failing = number == self.fail_at
        if failing and not self.after:
            raise ProviderError("Injected failure", f"call {number} ({name}) fails before it runs")
        result = call()
        if failing:
            raise ProviderError("Injected failure", f"call {number} ({name}) fails after it ran")
        return result

    def describe(self) -> str:
        return "a test wrapper that fails one call"

    def capabilities(self, backend: str) -> Capabilities:
        return self.inner.capabilities(backend)

    def refresh_volumes(
        self, volume_ids: Iterable[str], regions: Mapping[str, str | None] | None = None
    ) -> dict[str, VolumeFacts]:
        ids = list(volume_ids)
        return self._call("refresh_volumes", lambda: self.inner.refresh_volumes(ids, regions))

    def read_volume(self, volume_id: str, region: str | None = None) -> VolumeFacts:
        return self._call("read_volume", lambda: self.inner.read_volume(volume_id, region))

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        return self._call(f"create_volume {spec.address}", lambda: self.inner.create_volume(spec, token))

    def update_volume(
        self,
        volume_id: str,
        *,
        size_gb: int | None,
        tags: Mapping[str, str] | None,
        region: str | None = None,
        name: str | None = None,
    ) -> VolumeFacts:
        return self._call(
            f"update_volume {volume_id}",
            lambda: self.inner.update_volume(volume_id, size_gb=size_gb, tags=tags, region=region, name=name),
        )

    def delete_volume(self, volume_id: str, region: str | None = None) -> None:
        self._call(f"delete_volume {volume_id}", lambda: self.inner.delete_volume(volume_id, region))

    def find_volumes_by_token(
        self, tokens: Iterable[str], regions: Iterable[str | None] = ()
    ) -> dict[str, VolumeFacts]:
        wanted = list(tokens)
        return self._call("find_volumes_by_token", lambda: self.inner.find_volumes_by_token(wanted, regions))

    def find_leftovers(self) -> list[str]:
        return self._call("find_leftovers", self.inner.find_leftovers)

    def remove_leftovers(self) -> list[str]:
        return self._call("remove_leftovers", self.inner.remove_leftovers)


def _twenty_step_baseline(folder: Path) -> tuple[Path, Path]:
    """A project with 14 applied volumes whose configurations then ask for 20 steps:
    4 deletes, 4 grows and 12 creates."""
    project, root = folder / "project", folder / "root"
    project.mkdir(parents=True)
    for index in range(14):
        volume_file(project, f"old{index:02d}", size="1GB")
    LocalProvider(root)  # the root is made on first use
    baseline = apply(
        _workspace(project, LocalProvider(root)),
        load_project(project),
        PlanOptions(),
        command="test",
        lock_timeout=0,
        parallelism=1,
        confirm=lambda prepared: True,
    )
    assert baseline.report is not None and baseline.report.ok

    for index in range(4):
        (project / f"old{index:02d}.dstack.yml").unlink()
    for index in range(4, 8):
        volume_file(project, f"old{index:02d}", size="2GB")
    for index in range(12):
        volume_file(project, f"new{index:02d}", size="1GB")
    return project, root


def _apply_with(project: Path, provider: Provider) -> ApplyOutcome | None:
    """Apply in-process; None when the apply stopped before its steps with a provider error."""
    try:
        return apply(
            _workspace(project, provider),
            load_project(project),
            PlanOptions(),
            command="test",
            lock_timeout=0,
            parallelism=1,
            confirm=lambda prepared: True,
        )
    except ProviderError:
        return None


def _state_resources(project: Path) -> dict[str, dict[str, object]]:
    state = LocalStateStore(project / "volplan.state.json").read()
    assert state is not None
    return state.resources


def _check_failed_run(
    project: Path, root: Path, prior: dict[str, dict[str, object]], outcome: ApplyOutcome | None
) -> None:
    after = _state_resources(project)
    results = outcome.report.results if outcome is not None and outcome.report is not None else []
    succeeded = {result.change.address: result.change for result in results if result.status.value == "succeeded"}

    for address in prior:
        change = succeeded.get(address)
        if change is not None and change.action is Action.DELETE:
            assert address not in after, f"{address} was deleted but is still recorded"
        else:
            assert address in after, f"{address} existed before and is no longer recorded"
    for address, change in succeeded.items():
        if change.action is Action.CREATE:
            assert address in after, f"{address} was created but is not recorded"
        if change.action is Action.UPDATE:
            assert change.after is not None
            assert after[address]["size_gb"] == change.after["size_gb"], (
                f"{address} grew but the state has the old size"
            )

    on_disk = {path.name for path in root.iterdir() if path.name.startswith("vol-")}
    recorded = {str(record["id"]) for record in after.values()}
    assert on_disk <= recorded, f"volumes on disk but not in the state: {sorted(on_disk - recorded)}"


def test_failure_at_every_call_keeps_every_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    template = tmp_path / "template"
    _twenty_step_baseline(template)
    recording = FailAtCall(LocalProvider(template / "root"), fail_at=None, after=False)
    dry_run = tmp_path / "dry-run"
    shutil.copytree(template, dry_run)
    recording.inner = LocalProvider(dry_run / "root")
    outcome = _apply_with(dry_run / "project", recording)
    assert outcome is not None and outcome.report is not None
    assert len(outcome.report.results) == 20
    calls = len(recording.calls)
    assert calls == 22, recording.calls

    for number in range(1, calls + 1):
        for after in (False, True):
            folder = tmp_path / f"call-{number}-{'after' if after else 'before'}"
            shutil.copytree(template, folder)
            project, root = folder / "project", folder / "root"
            monkeypatch.setenv("VOLPLAN_LOCAL_ROOT", str(root))
            prior = _state_resources(project)
            failing = FailAtCall(LocalProvider(root), fail_at=number, after=after)

            outcome = _apply_with(project, failing)

            assert len(failing.calls) >= number, f"call {number} was never made"
            _check_failed_run(project, root, prior, outcome)
            if after and failing.calls[number - 1].startswith("create_volume"):
                assert outcome is not None
                assert len(outcome.adopted) == 1, f"call {number}: the volume of the failed create was not recorded"
            second = run(project, "apply", "-y")
            assert second.exit_code == 0, f"call {number} (after={after}): {second.output}"
            assert run(project, "plan", "--detailed-exitcode").exit_code == 0
            final = _state_resources(project)
            on_disk = {path.name for path in root.iterdir() if path.name.startswith("vol-")}
            assert on_disk == {str(record["id"]) for record in final.values()}
            assert len(final) == 22


def test_failed_state_write_keeps_errored_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, root = _twenty_step_baseline(tmp_path)
    monkeypatch.setenv("VOLPLAN_LOCAL_ROOT", str(root))
    before = (project / "volplan.state.json").read_bytes()

    class FullDisk(LocalStateStore):
        def write(self, state: State) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    workspace = Workspace(project, FullDisk(project / "volplan.state.json"), ProviderSet())
    with pytest.raises(VolplanError) as raised:
        apply(
            workspace,
            load_project(project),
            PlanOptions(),
            command="test",
            lock_timeout=0,
            parallelism=1,
            confirm=lambda prepared: True,
        )

    assert raised.value.title == "Failed to save the state"
    assert "errored.volplan.state.json" in raised.value.detail
    assert "move that file to" in raised.value.detail
    assert (project / "volplan.state.json").read_bytes() == before
    errored = LocalStateStore(project / "errored.volplan.state.json").read()
    assert errored is not None
    assert len(errored.resources) == 22
    assert (project / "volplan.state.json.journal").exists()

    recovered = run(project, "apply", "-y")

    assert recovered.exit_code == 0, recovered.output
    assert "Recovered from an interrupted apply" in recovered.stdout
    assert "No changes" in recovered.stdout
    assert len(_state_resources(project)) == 22


def test_failed_errored_write_points_to_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, root = _twenty_step_baseline(tmp_path)
    monkeypatch.setenv("VOLPLAN_LOCAL_ROOT", str(root))

    class ReadOnlyFolder(LocalStateStore):
        def write(self, state: State) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

        def write_errored(self, state: State) -> Path:
            raise OSError(errno.EROFS, "Read-only file system")

    workspace = Workspace(project, ReadOnlyFolder(project / "volplan.state.json"), ProviderSet())
    with pytest.raises(VolplanError) as raised:
        apply(
            workspace,
            load_project(project),
            PlanOptions(),
            command="test",
            lock_timeout=0,
            parallelism=1,
            confirm=lambda prepared: True,
        )

    assert "Nothing is lost" in raised.value.detail
    assert "volplan.state.json.journal" in raised.value.detail
    assert run(project, "apply", "-y").exit_code == 0
    assert len(_state_resources(project)) == 22
