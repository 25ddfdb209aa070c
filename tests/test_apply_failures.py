"""Apply under provider failures: what succeeded is recorded, and a second apply converges."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.errors import ProviderError
from engine.project import load_project
from engine.workflow import PlanOptions, Workspace, apply
from providers.base import Capabilities, Provider, VolumeFacts, VolumeSpec
from providers.local import LocalProvider
from providers.registry import ProviderSet
from state.store import LocalStateStore
from tests.conftest import run, volume_file


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
