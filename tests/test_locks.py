"""The state lock under real processes: concurrent applies, a killed holder, force-unlock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run, volume_file

STATE = "volplan.state.json"
LOCK = "volplan.state.json.lock"

# Runs the real CLI, and appends to $LOCK_RECORD when this process held the state lock. The
# recorded span starts after the lock was taken and ends before it is released, so two
# overlapping spans can only come from two holders at once.
_RECORDING_CLI = """
import json, os, sys, time
from contextlib import contextmanager
from state.locking import FileLock

original_hold = FileLock.hold

@contextmanager
def recorded_hold(self, command, timeout=0.0):
    with original_hold(self, command, timeout) as dead_holder:
        started = time.monotonic()
        try:
            yield dead_holder
        finally:
            ended = time.monotonic()
            with open(os.environ["LOCK_RECORD"], "a") as record:
                record.write(json.dumps([os.getpid(), started, ended]) + "\\n")

FileLock.hold = recorded_hold
from engine.cli import main
sys.argv = ["volplan", *sys.argv[1:]]
main()
"""


def _start(
    project: Path, *args: str, env: dict[str, str] | None = None, script: Path | None = None
) -> subprocess.Popen[str]:
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "engine"]
    return subprocess.Popen(
        [*command, *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_eight(project: Path, tmp_path: Path, lock_timeout: str) -> tuple[list[subprocess.Popen[str]], Path]:
    script = tmp_path / "recording_cli.py"
    script.write_text(_RECORDING_CLI)
    record = tmp_path / "lock-spans.jsonl"
    env = {"LOCK_RECORD": str(record), "PYTHONPATH": str(Path(__file__).parent.parent)}
    for index in range(8):
        volume_file(project, f"v{index}", size="1GB")
    processes = [
        _start(
            project, "apply", "-y", "-f", f"v{index}.dstack.yml", "--lock-timeout", lock_timeout, env=env, script=script
        )
        for index in range(8)
    ]
    return processes, record


def _spans(record: Path) -> list[tuple[int, float, float]]:
    return [tuple(json.loads(line)) for line in record.read_text().splitlines()]  # type: ignore[misc]


def _state(project: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((project / STATE).read_text())


def test_eight_waiting_applies_take_turns(project: Path, local_root: Path, tmp_path: Path) -> None:
    processes, record = _start_eight(project, tmp_path, "60s")
    results = [(process, *process.communicate(timeout=120)) for process in processes]

    for process, stdout, stderr in results:
        assert process.returncode == 0, stdout + stderr
    spans = sorted(_spans(record), key=lambda span: span[1])
    assert len(spans) == 8
    for earlier, later in zip(spans, spans[1:], strict=False):
        assert earlier[2] <= later[1], f"pid {earlier[0]} and pid {later[0]} held the lock at once"

    state = _state(project)
    assert sorted(r["address"] for r in state["resources"]) == [f"volume.v{index}" for index in range(8)]
    # The first apply writes serial 1 (the new lineage) and then 2; each later apply adds one.
    assert state["serial"] == 9
    on_disk = {path.name for path in local_root.iterdir() if path.name.startswith("vol-")}
    assert on_disk == {r["id"] for r in state["resources"]}


def test_eight_applies_without_waiting(project: Path, local_root: Path, tmp_path: Path) -> None:
    processes, record = _start_eight(project, tmp_path, "0")
    results = [(index, process, *process.communicate(timeout=120)) for index, process in enumerate(processes)]

    succeeded = {f"volume.v{index}" for index, process, _, _ in results if process.returncode == 0}
    for _, process, _, stderr in results:
        assert process.returncode in (0, 1), stderr
        if process.returncode == 1:
            assert "State locked" in stderr
            assert "held by" in stderr
            assert "(pid " in stderr
            assert "running 'volplan apply'" in stderr
            assert "Traceback" not in stderr
    assert succeeded
    assert {r["address"] for r in _state(project)["resources"]} == succeeded
    assert len(_spans(record)) == len(succeeded)


def test_killed_apply_leaves_no_lock(project: Path, local_root: Path) -> None:
    for index in range(300):
        volume_file(project, f"v{index:03d}", size="1GB")
    # The plan of 300 volumes is larger than a pipe's buffer, so the output goes to a file.
    with (project.parent / "killed-apply.log").open("w") as log:
        apply = subprocess.Popen(
            [sys.executable, "-m", "engine", "apply", "-y", "--parallelism", "1"],
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    journal = project / f"{STATE}.journal"
    deadline = time.monotonic() + 60
    while not journal.exists() and apply.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert journal.exists(), "the apply never started its steps"
    apply.send_signal(signal.SIGKILL)
    apply.wait(timeout=30)
    assert apply.returncode == -signal.SIGKILL
    holder = json.loads((project / LOCK).read_text())
    assert holder["pid"] == apply.pid

    after = run(project, "apply", "-y")

    assert after.exit_code == 0, after.output
    assert "previous holder of the state lock died" in after.stderr
    assert f"pid {apply.pid}" in after.stderr
    assert "running 'volplan apply'" in after.stderr
    state = _state(project)
    assert len(state["resources"]) == 300
    on_disk = {path.name for path in local_root.iterdir() if path.name.startswith("vol-")}
    assert on_disk == {r["id"] for r in state["resources"]}
    assert (project / LOCK).read_text() == ""


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


def _stop(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    if holder.stdout is not None:
        holder.stdout.close()


def _lock_id(project: Path) -> str:
    lock_id: str = json.loads((project / LOCK).read_text())["lock_id"]
    return lock_id


def test_waiting_apply_reports_wait(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    holder = _hold_lock(project / STATE)
    try:
        result = run(project, "apply", "-y", "--lock-timeout", "1s")
    finally:
        _stop(holder)

    assert result.exit_code == 1
    assert "still locked after waiting 1s" in result.stderr
    assert f"pid {holder.pid}" in result.stderr


def test_force_unlock_refuses_live_holder(project: Path, local_root: Path) -> None:
    holder = _hold_lock(project / STATE)
    try:
        lock_id = _lock_id(project)
        before = (project / LOCK).read_bytes()
        result = run(project, "force-unlock", lock_id, "-y")
        assert (project / LOCK).read_bytes() == before
    finally:
        _stop(holder)

    assert result.exit_code == 1
    assert "Lock held by a running process" in result.stderr
    assert f"pid {holder.pid}" in result.stderr


def test_force_unlock_clears_dead_holder(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    holder = _hold_lock(project / STATE)
    _stop(holder)
    lock_id = _lock_id(project)

    result = run(project, "force-unlock", lock_id, "-y")
    applied = run(project, "apply", "-y")

    assert result.exit_code == 0, result.output
    assert f"Lock {lock_id} cleared" in result.stdout
    assert f"pid {holder.pid}" in result.stdout
    assert applied.exit_code == 0, applied.output
    assert "previous holder" not in applied.stderr


@pytest.mark.parametrize(
    ("args", "title"),
    [
        (["force-unlock", "not-the-id", "-y"], "Lock ID mismatch"),
        (["force-unlock", "LOCK_ID_FROM_FILE"], "Approval needed"),
        (["force-unlock", "LOCK_ID_FROM_FILE", "-input=false"], "--input=false"),
    ],
)
def test_force_unlock_changes_nothing_on_error(project: Path, local_root: Path, args: list[str], title: str) -> None:
    holder = _hold_lock(project / STATE)
    _stop(holder)
    lock_id = _lock_id(project)
    before = (project / LOCK).read_bytes()

    result = run(project, *[lock_id if arg == "LOCK_ID_FROM_FILE" else arg for arg in args])

    assert result.exit_code == 1
    assert title in result.stderr
    assert (project / LOCK).read_bytes() == before


def test_force_unlock_without_lock(project: Path, local_root: Path) -> None:
    result = run(project, "force-unlock", "6f1c2a0e-3d4b-4c5d-9e8f-0a1b2c3d4e5f", "-y")

    assert result.exit_code == 1
    assert "Lock not found" in result.stderr
    assert "Traceback" not in result.output
