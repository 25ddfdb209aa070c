"""Kills and interrupts of a real `volplan apply` process: nothing lost, duplicated or left behind.

The random SIGKILL rounds pick a new seed on each run and print it on failure; set
VOLPLAN_CRASH_SEED to replay one. `python -m scripts.crash_long` runs many seeds.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from providers.local import STAGING_PREFIX, TRASH_PREFIX, VOLUME_ID, LocalProvider
from tests.conftest import run_process
from tests.crash_harness import (
    RunWorkload,
    VolumeWorkload,
    Workload,
    World,
    read_world,
    run_crash_rounds,
    start,
    wait_for,
)

_ROUNDS = 8


def _seed() -> int:
    configured = os.environ.get("VOLPLAN_CRASH_SEED")
    return int(configured) if configured else random.SystemRandom().randrange(2**32)


def _paused_command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.paused_volplan", "-C", str(project), *args]


def _configure(project: Path, count: int) -> VolumeWorkload:
    workload = VolumeWorkload(count=count, grown=0.0)
    workload.write_round(project, random.Random(0), final=True)
    return workload


def _wait_for_folders(root: Path, prefix: str, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if root.exists() and sum(1 for entry in root.iterdir() if entry.name.startswith(prefix)) >= count:
            return
        time.sleep(0.005)
    raise AssertionError(f"{count} folders starting with {prefix} never appeared under {root}")


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder with a hash of its content; the local index is a cache and left out."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.name.startswith("index.sqlite"):
                continue
            found[str(path)] = "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _recorded_ids(world: World) -> set[str]:
    assert world.state is not None
    return {record["id"] for record in world.state.resources.values()}


def _folder_ids(root: Path) -> set[str]:
    return {entry.name for entry in root.iterdir() if VOLUME_ID.match(entry.name)}


def _assert_converges(project: Path, local_root: Path, workload: VolumeWorkload) -> str:
    applied = run_process(project, "apply", "-y", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})
    assert applied.returncode == 0, applied.stdout + applied.stderr
    world = read_world(project, local_root)
    assert workload.check(world, converged=True) == []
    assert world.journal is None
    assert world.leftover_folders() == []
    planned = run_process(project, "plan", "--detailed-exitcode", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})
    assert planned.returncode == 0, planned.stdout
    return applied.stdout


@pytest.mark.parametrize(
    "workloads",
    [
        pytest.param(lambda: [VolumeWorkload(count=200), RunWorkload(count=20)], id="volumes-and-runs"),
        # Runs alone: every kill lands among node starts and stops, attaches and detaches.
        pytest.param(lambda: [RunWorkload(count=20)], id="runs"),
    ],
)
def test_sigkill_rounds_converge(
    project: Path, local_root: Path, tmp_path: Path, workloads: Callable[[], list[Workload]]
) -> None:
    seed = _seed()
    logs = tmp_path / "logs"
    logs.mkdir()

    run = run_crash_rounds(project, local_root, workloads(), seed=seed, rounds=_ROUNDS, scratch=logs)

    assert run.problems == [], f"seed {seed}: {len(run.problems)} problems, the first: {run.problems[:10]}"
    assert run.final_exit_code == 0, f"seed {seed}: {run.final_output[-3000:]}"
    assert run.final_plan_exit_code == 0, f"seed {seed}"
    assert len(run.rounds) == _ROUNDS


@pytest.mark.parametrize(("number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_finished_steps(
    project: Path, local_root: Path, tmp_path: Path, number: signal.Signals, exit_code: int
) -> None:
    workload = _configure(project, 200)
    log = tmp_path / "apply.log"
    process = start(
        _paused_command(project, "apply", "-y", "--parallelism", "10"),
        local_root,
        log,
        {"VOLPLAN_TEST_PAUSE": "create.made=0.05"},
    )
    assert wait_for(log, re.compile(rb"Creating\.\.\."), process, timeout=30)

    process.send_signal(number)

    assert process.wait(timeout=60) == exit_code
    output = log.read_text()
    assert f"{number.name} received: finishing the steps in flight" in output
    assert f"Apply interrupted by {number.name}." in output
    assert "What succeeded is in the state; run apply again to finish." in output
    assert "State saved." in output
    world = read_world(project, local_root)
    assert world.journal is None
    assert _recorded_ids(world) == _folder_ids(local_root)
    assert 0 < len(_recorded_ids(world)) < 200
    assert world.leftover_folders() == []
    _assert_converges(project, local_root, workload)


def test_second_sigint_abandons_then_apply_adopts(project: Path, local_root: Path, tmp_path: Path) -> None:
    workload = _configure(project, 20)
    log = tmp_path / "apply.log"
    process = start(
        _paused_command(project, "apply", "-y", "--parallelism", "4"),
        local_root,
        log,
        {"VOLPLAN_TEST_PAUSE": "create.made=60"},
    )
    _wait_for_folders(local_root, "vol-", 4, process)

    process.send_signal(signal.SIGINT)
    assert wait_for(log, re.compile(rb"SIGINT received"), process, timeout=30)
    process.send_signal(signal.SIGINT)

    assert process.wait(timeout=10) == 130
    assert "abandoning the steps in flight" in log.read_text()
    world = read_world(project, local_root)
    assert world.journal is not None
    assert len(world.journal.pending) == 4
    assert _recorded_ids(world) == set()
    assert workload.check(world, converged=False) == []

    applied = _assert_converges(project, local_root, workload)
    assert "Recovered from an interrupted apply" in applied
    assert applied.count("adopted volume") == 4
    assert len(_folder_ids(local_root)) == 20


def test_kill_after_volume_made_is_adopted(project: Path, local_root: Path, tmp_path: Path) -> None:
    workload = _configure(project, 20)
    process = start(
        _paused_command(project, "apply", "-y", "--parallelism", "4"),
        local_root,
        tmp_path / "apply.log",
        {"VOLPLAN_TEST_PAUSE": "create.made=60"},
    )
    _wait_for_folders(local_root, "vol-", 4, process)
    process.kill()
    process.wait(timeout=10)
    made = _folder_ids(local_root)
    before = _snapshot(project, local_root)

    planned = run_process(project, "plan", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert planned.returncode == 0, planned.stderr
    assert "plan writes nothing" in planned.stdout
    assert planned.stdout.count("adopted volume") == 4
    assert "Plan: 16 to create." in planned.stdout
    assert _snapshot(project, local_root) == before

    _assert_converges(project, local_root, workload)
    assert made <= _folder_ids(local_root)
    assert len(_folder_ids(local_root)) == 20


def test_kill_in_staging_leaves_folders_apply_removes(project: Path, local_root: Path, tmp_path: Path) -> None:
    workload = _configure(project, 20)
    process = start(
        _paused_command(project, "apply", "-y", "--parallelism", "4"),
        local_root,
        tmp_path / "apply.log",
        {"VOLPLAN_TEST_PAUSE": "create.staged=60"},
    )
    _wait_for_folders(local_root, STAGING_PREFIX, 4, process)
    process.kill()
    process.wait(timeout=10)
    before = _snapshot(project, local_root)

    planned = run_process(project, "plan", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert "found 4 temporary folder(s) of interrupted local creates" in planned.stdout
    assert planned.stdout.count("an interrupted create made no volume") == 4
    assert _snapshot(project, local_root) == before

    applied = _assert_converges(project, local_root, workload)
    assert "removed 4 temporary folder(s) of interrupted local creates" in applied


def test_kill_during_delete_leaves_trash_apply_removes(project: Path, local_root: Path, tmp_path: Path) -> None:
    workload = _configure(project, 20)
    assert run_process(project, "apply", "-y", env={"VOLPLAN_LOCAL_ROOT": str(local_root)}).returncode == 0
    for name in sorted(workload.configured)[:10]:
        (project / f"{name}.dstack.yml").unlink()
        workload.configured.remove(name)
    process = start(
        _paused_command(project, "apply", "-y", "--parallelism", "4"),
        local_root,
        tmp_path / "apply.log",
        {"VOLPLAN_TEST_PAUSE": "delete.trashed=60"},
    )
    _wait_for_folders(local_root, TRASH_PREFIX, 4, process)
    process.kill()
    process.wait(timeout=10)
    assert workload.check(read_world(project, local_root), converged=False) == []

    applied = _assert_converges(project, local_root, workload)

    assert "removed 4 folder(s) of interrupted local deletes" in applied
    assert applied.count("an interrupted delete of vol-") == 4
    assert len(_folder_ids(local_root)) == 10


def test_plan_json_reports_recovery_on_stderr(project: Path, local_root: Path, tmp_path: Path) -> None:
    _configure(project, 4)
    process = start(
        _paused_command(project, "apply", "-y", "--parallelism", "4"),
        local_root,
        tmp_path / "apply.log",
        {"VOLPLAN_TEST_PAUSE": "create.made=60"},
    )
    _wait_for_folders(local_root, "vol-", 4, process)
    process.kill()
    process.wait(timeout=10)

    planned = run_process(project, "plan", "--json", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert planned.returncode == 0
    assert planned.stdout.lstrip().startswith("{")
    assert planned.stderr.count("adopted volume") == 4


def test_staging_of_live_create_is_kept(local_root: Path) -> None:
    creator = LocalProvider(local_root)
    local_root.mkdir(parents=True)
    staging, descriptor = creator._new_staging_folder()
    other = LocalProvider(local_root)

    assert other.find_leftovers() == []
    assert other.remove_leftovers() == []
    assert staging.exists()

    os.close(descriptor)

    assert other.remove_leftovers() == [
        f"removed 1 temporary folder(s) of interrupted local creates under {local_root}"
    ]
    assert not staging.exists()
