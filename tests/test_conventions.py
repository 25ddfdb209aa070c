"""The command-line conventions that scripts and CI jobs rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.argv import normalise
from tests.conftest import run, run_process, volume_file

STATE = "volplan.state.json"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "-out=p"], ["plan", "--out=p"]),
        (["plan", "-out", "p"], ["plan", "--out", "p"]),
        (["apply", "-auto-approve"], ["apply", "--auto-approve"]),
        (["plan", "-detailed-exitcode"], ["plan", "--detailed-exitcode"]),
        (["apply", "-parallelism=4", "-lock-timeout", "5s"], ["apply", "--parallelism=4", "--lock-timeout", "5s"]),
        (["plan", "-refresh=false", "-input=false"], ["plan", "--refresh=false", "--input=false"]),
        (
            ["plan", "-target", "volume.a", "-exclude=volume.b", "-replace=volume.c"],
            ["plan", "--target", "volume.a", "--exclude=volume.b", "--replace=volume.c"],
        ),
        (["apply", "-f", "x.dstack.yml", "-y", "-n", "n"], ["apply", "-f", "x.dstack.yml", "-y", "-n", "n"]),
        (["plan", "-C", "dir", "--no-color"], ["-C", "dir", "--no-color", "plan"]),
        (["plan", "--state=s.json", "--provider", "aws=local"], ["--state=s.json", "--provider", "aws=local", "plan"]),
        (["plan", "-Cdir"], ["-C", "dir", "plan"]),
        (["plan", "--", "-out"], ["plan", "--", "-out"]),
        (["apply", "-f", "a.dstack.yml", "-no-color"], ["--no-color", "apply", "-f", "a.dstack.yml"]),
        (["plan", "-json"], ["plan", "--json"]),
    ],
)
def test_argv_normalisation(args: list[str], expected: list[str]) -> None:
    assert normalise(args) == expected


def test_terraform_spellings_work(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    planned = run(project, "plan", "-detailed-exitcode", "-refresh=false")
    applied = run(project, "apply", "-auto-approve", "-parallelism=2", "-lock-timeout", "1s")

    assert planned.exit_code == 2
    assert applied.exit_code == 0, applied.output


def test_global_options_after_command(project: Path, local_root: Path, tmp_path: Path) -> None:
    volume_file(project, "data")
    state = tmp_path / "moved.json"

    result = run(project, "apply", "-y", "--state", str(state), "--no-color")

    assert result.exit_code == 0, result.output
    assert state.exists()


def test_detailed_exitcode(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    assert run(project, "plan").exit_code == 0
    assert run(project, "plan", "--detailed-exitcode").exit_code == 2
    run(project, "apply", "-y")
    assert run(project, "plan", "--detailed-exitcode").exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--no-such-option"],
        ["no-such-command"],
        ["apply", "--parallelism", "zero"],
        ["apply", "--lock-timeout", "1h30m"],
        ["--provider", "aws", "plan"],
    ],
)
def test_usage_errors_exit_1(project: Path, local_root: Path, args: list[str]) -> None:
    result = run(project, *args)

    assert result.exit_code == 1
    assert "Error" in result.stderr
    assert "Traceback" not in result.output


def test_apply_without_terminal_fails_fast(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "apply")

    assert result.exit_code == 1
    assert "--auto-approve" in result.stderr
    assert not (project / STATE).exists()


def test_input_false_fails_fast(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "apply", "-input=false")

    assert result.exit_code == 1
    assert "--input=false" in result.stderr


def test_json_plan_prints_only_json(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "old")
    run(project, "apply", "-y")
    (project / "old.dstack.yml").unlink()

    result = run(project, "plan", "--json")

    document = json.loads(result.stdout)
    assert set(document) == {"format_version", "changes", "summary"}
    assert document["format_version"] == "1"
    actions = {change["address"]: change["action"] for change in document["changes"]}
    assert actions == {"volume.old": "delete", "volume.data": "no-op"}
    for change in document["changes"]:
        assert set(change) >= {"address", "action", "reason", "before", "after"}
    assert document["summary"]["delete"] == 1


def test_human_summary_counts_each_action(project: Path, local_root: Path) -> None:
    volume_file(project, "keep", size="10GB")
    volume_file(project, "drop")
    run(project, "apply", "-y")
    volume_file(project, "keep", size="20GB")
    volume_file(project, "new1")
    volume_file(project, "new2")
    (project / "drop.dstack.yml").unlink()

    result = run(project, "plan")

    assert "Plan: 2 to create, 1 to update, 1 to delete." in result.stdout


def test_no_color_output_has_no_escapes(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run_process(project, "plan", env={"NO_COLOR": "1"})

    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout


def _hold_lock(state: Path) -> subprocess.Popen[str]:
    """Start a real process that takes the state lock and keeps it until killed."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from state.store import LocalStateStore\n"
        "with LocalStateStore(Path(sys.argv[1])).lock('volplan apply'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(state)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    if holder.stdout is not None:
        holder.stdout.close()


def test_locked_state_fails_with_holder(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    holder = _hold_lock(project / STATE)
    try:
        result = run(project, "apply", "-y")
    finally:
        _release(holder)

    assert result.exit_code == 1
    assert "State locked" in result.stderr
    assert f"pid {holder.pid}" in result.stderr


def test_killed_lock_holder_does_not_block(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    holder = _hold_lock(project / STATE)
    _release(holder)

    result = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert "previous holder of the state lock died" in result.stderr


def test_version(project: Path) -> None:
    result = run(project, "--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("volplan, version")


def test_no_color_spelling_is_not_a_name(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "apply", "-f", "data.dstack.yml", "-no-color", "-auto-approve")

    assert result.exit_code == 0, result.output
    assert "o-color" not in result.output
    assert [r["address"] for r in json.loads((project / STATE).read_text())["resources"]] == ["volume.data"]


def test_plan_accepts_terraform_ci_options(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "plan", "-input=false", "-lock-timeout=5s", "-parallelism=4", "-no-color")

    assert result.exit_code == 0, result.output
    assert "Plan: 1 to create." in result.stdout


def test_f_rejects_names_discovery_cannot_find(project: Path, local_root: Path) -> None:
    (project / "data.yml").write_text("type: volume\nname: data\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n")

    result = run(project, "apply", "-f", "data.yml", "-y")

    assert result.exit_code == 1
    assert "data.dstack.yml" in result.stderr
    assert not (project / STATE).exists()
