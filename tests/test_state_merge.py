"""state merge: resource-by-resource merges, the CLI driver, and git running it as a merge driver."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import StateError
from state.merge import MergeConflict, merge_states
from state.model import State
from tests.conftest import run, run_process, volume_file

LINEAGE = "6f1c0c1e-3b7a-4c55-9a57-0c8f3f3f0d11"
OTHER_LINEAGE = "00000000-0000-4000-8000-000000000000"
STATE = "volplan.state.json"


def volume(name: str, size: int = 10) -> dict[str, object]:
    return {
        "address": f"volume.{name}",
        "kind": "volume",
        "name": name,
        "id": f"vol-{name:0>17}"[:21],
        "provider": "local",
        "backend": "aws",
        "region": "eu-central-1",
        "external": False,
        "size_gb": size,
    }


def state(serial: int, *records: dict[str, object], lineage: str = LINEAGE) -> State:
    return State(lineage, serial, {str(record["address"]): dict(record) for record in records})


@pytest.mark.parametrize(
    ("base", "ours", "theirs", "expected"),
    [
        pytest.param([], [volume("alpha")], [volume("beta")], [volume("alpha"), volume("beta")], id="both-add"),
        pytest.param([volume("data")], [volume("data", 20)], [volume("data")], [volume("data", 20)], id="ours-grows"),
        pytest.param([volume("data")], [volume("data")], [volume("data", 20)], [volume("data", 20)], id="theirs-grows"),
        pytest.param(
            [volume("data")], [volume("data", 20)], [volume("data", 20)], [volume("data", 20)], id="same-change"
        ),
        pytest.param([volume("data")], [], [volume("data")], [], id="ours-deletes"),
        pytest.param([volume("data")], [volume("data")], [], [], id="theirs-deletes"),
        pytest.param([volume("data")], [], [], [], id="both-delete"),
    ],
)
def test_merge_cases(
    base: list[dict[str, object]],
    ours: list[dict[str, object]],
    theirs: list[dict[str, object]],
    expected: list[dict[str, object]],
) -> None:
    merged = merge_states(state(1, *base), state(4, *ours), state(7, *theirs))

    assert merged.resources == {record["address"]: record for record in expected}
    assert merged.serial == 8
    assert merged.lineage == LINEAGE


@pytest.mark.parametrize(
    ("base", "ours", "theirs"),
    [
        pytest.param([volume("data")], [volume("data", 20)], [volume("data", 30)], id="both-grow"),
        pytest.param([volume("data")], [], [volume("data", 30)], id="delete-and-grow"),
        pytest.param([], [volume("data", 20)], [volume("data", 30)], id="both-add-differently"),
    ],
)
def test_merge_conflicts(
    base: list[dict[str, object]], ours: list[dict[str, object]], theirs: list[dict[str, object]]
) -> None:
    with pytest.raises(MergeConflict) as caught:
        merge_states(state(1, *base), state(2, *ours), state(3, *theirs))

    assert [conflict.address for conflict in caught.value.conflicts] == ["volume.data"]
    assert caught.value.conflicts[0].ours == (ours[0] if ours else None)
    assert caught.value.conflicts[0].theirs == theirs[0]


def test_merge_rejects_other_lineage() -> None:
    with pytest.raises(StateError) as caught:
        merge_states(None, state(1), state(1, lineage=OTHER_LINEAGE))

    assert caught.value.title == "Cannot merge states of different lineages"
    assert OTHER_LINEAGE in caught.value.detail


def test_base_of_other_lineage_is_ignored() -> None:
    base = state(1, volume("data"), lineage=OTHER_LINEAGE)

    with pytest.raises(MergeConflict):
        merge_states(base, state(2, volume("data", 20)), state(3, volume("data")))


def write_state(path: Path, value: State) -> Path:
    path.write_text(value.to_text())
    return path


def test_driver_writes_ours_in_place(tmp_path: Path) -> None:
    base = write_state(tmp_path / "base", state(1))
    ours = write_state(tmp_path / "ours", state(2, volume("alpha")))
    theirs = write_state(tmp_path / "theirs", state(5, volume("beta")))

    result = run(tmp_path / "nowhere", "state", "merge", str(base), str(ours), str(theirs))

    assert result.exit_code == 0, result.output
    merged = json.loads(ours.read_text())
    assert [record["address"] for record in merged["resources"]] == ["volume.alpha", "volume.beta"]
    assert merged["serial"] == 6
    assert (
        ours.read_text()
        == State(LINEAGE, 6, {"volume.alpha": volume("alpha"), "volume.beta": volume("beta")}).to_text()
    )
    assert not (tmp_path / "nowhere").exists()


def test_driver_empty_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_text("")
    ours = write_state(tmp_path / "ours", state(1, volume("alpha")))
    theirs = write_state(tmp_path / "theirs", state(1, volume("beta")))

    result = run(tmp_path, "state", "merge", str(base), str(ours), str(theirs))

    assert result.exit_code == 0, result.output
    assert len(json.loads(ours.read_text())["resources"]) == 2


def test_driver_conflict_writes_nothing(tmp_path: Path) -> None:
    base = write_state(tmp_path / "base", state(1, volume("data")))
    ours = write_state(tmp_path / "ours", state(2, volume("data", 20)))
    theirs = write_state(tmp_path / "theirs", state(2, volume("data", 30)))
    ours_before = ours.read_bytes()

    result = run(tmp_path, "state", "merge", str(base), str(ours), str(theirs))

    assert result.exit_code == 1
    assert ours.read_bytes() == ours_before
    assert "State merge conflict" in result.stderr
    assert "volume.data:\n  ours:" in result.stderr
    assert '"size_gb": 20' in result.stderr
    assert '"size_gb": 30' in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "Damaged state file"),
        (json.dumps({"version": 99, "lineage": LINEAGE, "serial": 1, "resources": []}), "newer volplan"),
        (
            json.dumps(
                {
                    "version": 1,
                    "lineage": LINEAGE,
                    "serial": 1,
                    "resources": [
                        {"address": "volume.xy", "kind": "volume", "name": "xy", "id": "vol-1", "backend": "aws"}
                    ],
                }
            ),
            "State file needs an upgrade",
        ),
    ],
)
def test_driver_rejects_bad_theirs(tmp_path: Path, text: str, expected: str) -> None:
    base = write_state(tmp_path / "base", state(1))
    ours = write_state(tmp_path / "ours", state(2, volume("alpha")))
    (tmp_path / "theirs").write_text(text)
    ours_before = ours.read_bytes()

    result = run(tmp_path, "state", "merge", str(base), str(ours), str(tmp_path / "theirs"))

    assert result.exit_code == 1
    assert expected in result.stderr
    assert "theirs" in result.stderr
    assert "Traceback" not in result.output
    assert ours.read_bytes() == ours_before


# Git, run as a real subprocess in a temporary repository whose configuration names volplan as
# the merge driver for the state file. Global and system git configuration are kept out.


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    return subprocess.run(["git", *args], cwd=repo, env=environment, capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def repository(project: Path) -> Path:
    """A git repository holding a project whose volume `base` (10 GB) is applied and committed."""
    ok(git(project, "init", "-q", "-b", "main"))
    driver = f"{shlex.quote(sys.executable)} -m engine state merge %O %A %B"
    ok(git(project, "config", "merge.volplan-state.name", "volplan state files"))
    ok(git(project, "config", "merge.volplan-state.driver", driver))
    (project / ".gitattributes").write_text(f"{STATE} merge=volplan-state\n")
    (project / ".gitignore").write_text(f"{STATE}.*\n")
    volume_file(project, "base", size="10GB")
    assert run(project, "apply", "-y").exit_code == 0
    commit_all(project, "Add the base volume")
    return project


def commit_all(repo: Path, message: str) -> None:
    ok(git(repo, "add", "-A"))
    ok(git(repo, "commit", "-q", "-m", message))


def branch_and_apply(repo: Path, branch: str, name: str, size: str) -> None:
    ok(git(repo, "checkout", "-q", "main"))
    ok(git(repo, "checkout", "-q", "-b", branch))
    volume_file(repo, name, size=size)
    result = run(repo, "apply", "-y")
    assert result.exit_code == 0, result.output
    commit_all(repo, f"Apply {branch}")


def test_git_merges_two_added_volumes(repository: Path) -> None:
    branch_and_apply(repository, "add-alpha", "alpha", "10GB")
    branch_and_apply(repository, "add-beta", "beta", "10GB")
    serials = [json.loads(ok(git(repository, "show", f"{b}:{STATE}")))["serial"] for b in ("add-alpha", "add-beta")]
    ok(git(repository, "checkout", "-q", "main"))
    ok(git(repository, "merge", "-q", "add-alpha"))

    merged = git(repository, "merge", "--no-edit", "add-beta")

    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "volplan: merged the state" in merged.stderr
    assert ok(git(repository, "status", "--porcelain")) == ""
    state_after = json.loads((repository / STATE).read_text())
    assert [r["address"] for r in state_after["resources"]] == ["volume.alpha", "volume.base", "volume.beta"]
    assert state_after["serial"] == max(serials) + 1
    plan = run_process(repository, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes." in plan.stdout


def test_git_reports_both_resizes_as_conflict(repository: Path) -> None:
    branch_and_apply(repository, "grow-20", "base", "20GB")
    branch_and_apply(repository, "grow-30", "base", "30GB")
    ok(git(repository, "checkout", "-q", "main"))
    ok(git(repository, "merge", "-q", "grow-20"))
    ours = ok(git(repository, "show", f"HEAD:{STATE}"))

    merged = git(repository, "merge", "--no-edit", "grow-30")

    assert merged.returncode != 0
    output = merged.stdout + merged.stderr
    assert "State merge conflict" in output
    assert "volume.base:" in output
    assert '"size_gb": 20' in output
    assert '"size_gb": 30' in output
    assert STATE in ok(git(repository, "diff", "--name-only", "--diff-filter=U")).split()
    assert (repository / STATE).read_text() == ours
