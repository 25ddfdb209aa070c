"""Golden plan cases: every folder under tests/golden is one case, run through the pure planner.

A case folder holds:
  project/      the configurations (and an optional volplan.yml with moved: and protect:)
  state.json    the prior state (optional: no state)
  cloud.json    {"volumes": [facts...]}: what the provider reports (optional: every volume in
                the state exists as recorded)
  case.json     {"options": {"allow_replace": bool, "destroy": bool, "files": [...],
                             "targets": [address, ...], "replace": [address, ...]},
                 "changes": [[action, address], ...]   expected actionable changes, in order
                 "warnings": [substring, ...]}         or
                {"error": title, "error_contains": [substring, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import VolplanError
from engine.pipeline import plan_changes
from engine.planner import PlanInput
from engine.project import load_project
from providers.base import VolumeFacts
from state.model import State, parse_state

CASES = Path(__file__).parent / "golden"


def _facts(entry: dict[str, Any]) -> VolumeFacts:
    return VolumeFacts(
        id=entry["id"],
        backend=entry["backend"],
        region=entry.get("region"),
        availability_zone=entry.get("availability_zone"),
        size_gb=entry["size_gb"],
        tags=entry.get("tags", {}),
        created_at=entry.get("created_at", "2026-01-01T00:00:00Z"),
    )


def _cloud(case: Path, state: State | None) -> dict[str, VolumeFacts]:
    path = case / "cloud.json"
    if path.exists():
        return {entry["id"]: _facts(entry) for entry in json.loads(path.read_text())["volumes"]}
    records = state.resources.values() if state else []
    return {r["id"]: _facts(r) for r in records if r.get("kind") == "volume"}


def _plan_case(case: Path, spec: dict[str, Any]) -> Any:
    options = spec.get("options", {})
    project = load_project(case / "project", options.get("files"))
    state_path = case / "state.json"
    state = parse_state(state_path.read_text(), str(state_path)) if state_path.exists() else None
    cloud = _cloud(case, state)
    facts = {a: cloud.get(r["id"]) for a, r in (state.resources.items() if state else []) if r.get("kind") == "volume"}
    registered = {
        v.config.volume_id: cloud.get(v.config.volume_id) for v in project.volumes.values() if v.config.volume_id
    }
    return plan_changes(
        PlanInput(
            project=project,
            prior=state,
            facts=facts,
            registered=registered,
            provider_kind=lambda backend: "local",
            allow_replace=options.get("allow_replace", False),
            destroy=options.get("destroy", False),
            targets=tuple(options.get("targets", ())),
            replace=tuple(options.get("replace", ())),
        )
    )


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_golden(case: str) -> None:
    folder = CASES / case
    spec = json.loads((folder / "case.json").read_text())

    if "error" in spec:
        with pytest.raises(VolplanError) as caught:
            _plan_case(folder, spec)
        assert caught.value.title == spec["error"]
        for text in spec.get("error_contains", []):
            assert text in caught.value.detail
        return

    plan = _plan_case(folder, spec)
    assert [[c.action.value, c.address] for c in plan.actionable] == spec["changes"]
    for text in spec.get("warnings", []):
        assert any(text in warning for warning in plan.warnings), plan.warnings
