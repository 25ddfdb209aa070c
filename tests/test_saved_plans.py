"""Saved plans: plan --out writes the plan bound to its state; apply FILE runs it once, unasked."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from engine.actions import Action, Change, Plan
from engine.errors import UsageError
from engine.planfile import SavedPlan, StateBinding, read_plan_file, record_fingerprint, stale_reason, write_plan_file
from providers.local import LocalProvider
from state.model import State
from tests.conftest import run, volume_file
from tests.terminal import run_in_terminal

STATE = "volplan.state.json"


@pytest.fixture(autouse=True)
def _work_in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan files are paths relative to the current folder, as in Terraform: keep them in the project."""
    monkeypatch.chdir(project)


def read_state(project: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((project / STATE).read_text())


def test_plan_file_round_trip_is_lossless(tmp_path: Path) -> None:
    before = {"address": "volume.a", "size_gb": 10, "tags": {"team": "ml"}, "external": False, "region": None}
    after = {**before, "size_gb": 20}
    plan = Plan(
        changes=[
            Change("volume.a", Action.UPDATE, "size grows", before, after, changed_fields=("size_gb",)),
            Change("volume.b", Action.DELETE, "gone", after, None, destroys_data=True),
            Change("volume.c", Action.UPDATE, "renamed", before, after, previous_address="volume.old"),
            Change("volume.d", Action.NO_OP, "matches", before, before),
        ],
        edges=[("volume.b", "volume.a")],
        warnings=["a warning"],
        notes=["a note"],
        lineage="6f1c0c1e-3b7a-4c55-9a57-0c8f3f3f0d11",
        serial=7,
    )
    state = State(plan.lineage or "", 7, {"volume.a": before, "volume.b": after})
    path = tmp_path / "p"

    write_plan_file(path, SavedPlan.bind(plan, state))
    read_back = read_plan_file(path)

    assert read_back.plan == plan
    assert read_back.resources == {
        "volume.a": record_fingerprint(before),
        "volume.b": record_fingerprint(after),
        "volume.c": None,
        "volume.old": None,
    }
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_stale_reasons_name_the_change() -> None:
    lineage = "6f1c0c1e-3b7a-4c55-9a57-0c8f3f3f0d11"
    record = {"address": "volume.a", "kind": "volume", "size_gb": 10}
    made_at = StateBinding(lineage, 3, {"volume.a": record_fingerprint(record), "volume.new": None})
    grown = {**record, "size_gb": 20}

    assert stale_reason(made_at, State(lineage, 3, {"volume.a": record}), journal_pending=False) is None
    assert stale_reason(made_at, State(lineage, 9, {"volume.a": record, "volume.b": {}}), False) is None
    assert "volume.a changed since the plan was made" in str(
        stale_reason(made_at, State(lineage, 4, {"volume.a": grown}), False)
    )
    assert "volume.a was removed from the state" in str(stale_reason(made_at, State(lineage, 4), False))
    added = State(lineage, 4, {"volume.a": record, "volume.new": record})
    assert "volume.new was added to the state" in str(stale_reason(made_at, added, False))
    assert "serial 3 then, 4 now" in str(stale_reason(made_at, added, False))
    assert "lineage" in str(stale_reason(made_at, State("00000000-0000-4000-8000-000000000000", 3), False))
    assert "state file is now missing" in str(stale_reason(made_at, None, journal_pending=False))
    assert "journal" in str(stale_reason(made_at, State(lineage, 3, {"volume.a": record}), journal_pending=True))
    assert stale_reason(StateBinding(None, None), None, journal_pending=False) is None
    assert "made with no state" in str(stale_reason(StateBinding(None, None), State(lineage, 1), False))


def test_apply_twice_rejects_stale_plan(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "apply", "-y")
    volume_file(project, "data", size="20GB")

    serial = read_state(project)["serial"]

    planned = run(project, "plan", "-out", "p")
    first = run(project, "apply", "p")
    state_after_first = (project / STATE).read_bytes()
    second = run(project, "apply", "p")

    assert planned.exit_code == 0, planned.output
    assert "volplan apply p" in planned.stdout
    assert first.exit_code == 0, first.output
    assert read_state(project)["resources"][0]["size_gb"] == 20
    assert second.exit_code == 1
    assert "Saved plan is stale" in second.stderr
    assert "volume.data changed since the plan was made" in second.stderr
    assert f"serial {serial} then, {serial + 1} now" in second.stderr
    assert (project / STATE).read_bytes() == state_after_first


def test_no_state_plan_stale_after_apply(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    run(project, "plan", "--out=p")
    first = run(project, "apply", "p")
    second = run(project, "apply", "p")

    assert first.exit_code == 0, first.output
    assert len(LocalProvider(local_root).refresh_volumes([read_state(project)["resources"][0]["id"]])) == 1
    assert second.exit_code == 1
    assert "the plan was made with no state, and the state now exists" in second.stderr
    assert len(read_state(project)["resources"]) == 1


def test_no_state_plan_stale_after_other_apply(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "plan", "--out", "p")
    run(project, "apply", "-y")

    result = run(project, "apply", "p")

    assert result.exit_code == 1
    assert "made with no state" in result.stderr
    assert len(read_state(project)["resources"]) == 1


def test_apply_runs_saved_changes_not_a_fresh_diff(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "plan", "--out", "p")
    volume_file(project, "data", size="30GB")
    volume_file(project, "other")

    result = run(project, "apply", "p")

    assert result.exit_code == 0, result.output
    resources = read_state(project)["resources"]
    assert [(r["address"], r["size_gb"]) for r in resources] == [("volume.data", 10)]


def test_apply_plan_file_never_prompts(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "plan", "--out", "p")

    result = run_in_terminal(project, "apply", "p")

    assert result.exit_code == 0, result.screen
    assert "Apply complete!" in result.screen
    assert "[y/n]" not in result.screen
    assert "Enter a value" not in result.screen


def test_plan_file_rejects_planning_options(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    run(project, "plan", "--out", "p")

    for extra in (["-f", "data.dstack.yml"], ["--allow-replace"], ["-refresh=false"]):
        result = run(project, "apply", "p", *extra)
        assert result.exit_code == 1, extra
        assert "Options not allowed with a saved plan" in result.stderr
    assert not (project / STATE).exists()


def test_configuration_given_as_plan_file(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "apply", str(project / "data.dstack.yml"))

    assert result.exit_code == 1
    assert "Not a plan file" in result.stderr
    assert "apply -f" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "it is not JSON"),
        ('{"format": "volplan-plan", "format_version": 99}', "Unsupported plan file"),
        ('{"format": "volplan-plan", "format_version": 1}', "plan format 1, written by an older volplan"),
        ('{"hello": 1}', "no volplan plan header"),
    ],
)
def test_damaged_plan_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "p"
    path.write_text(content)

    with pytest.raises(UsageError) as caught:
        read_plan_file(path)

    assert expected in f"{caught.value.title} {caught.value.detail}"


def test_missing_plan_file(project: Path, local_root: Path) -> None:
    result = run(project, "apply", "nothing-here.plan")

    assert result.exit_code == 1
    assert "Plan file not found" in result.stderr


def test_plan_from_another_volplan_version(tmp_path: Path) -> None:
    path = tmp_path / "p"
    write_plan_file(path, SavedPlan(Plan(changes=[])))
    document = json.loads(path.read_text())
    document["volplan_version"] = "0.0.1"
    path.write_text(json.dumps(document))

    with pytest.raises(UsageError) as caught:
        read_plan_file(path)

    assert caught.value.title == "Plan made by another volplan"
