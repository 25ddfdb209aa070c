"""Commands on a state in S3 (moto's server on 127.0.0.1): real processes, locks, pull and push."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import run, volume_file, write
from tests.s3_server import S3

KEY = "prod/volplan.state.json"
REPOSITORY = Path(__file__).parent.parent

# Runs the real CLI, and appends to $LOCK_RECORD when this process held the state lock. The
# span starts after the lock was taken and ends before it is released, so two overlapping
# spans can only come from two holders at once.
_RECORDING_CLI = """
import json, os, sys, time
from contextlib import contextmanager
from state.lease_lock import LeaseLock

original_hold = LeaseLock.hold

@contextmanager
def recorded_hold(self, command, timeout=0.0):
    with original_hold(self, command, timeout) as expired_holder:
        started = time.time()
        try:
            yield expired_holder
        finally:
            ended = time.time()
            with open(os.environ["LOCK_RECORD"], "a") as record:
                record.write(json.dumps([os.getpid(), started, ended]) + "\\n")

LeaseLock.hold = recorded_hold
from engine.cli import main
sys.argv = ["volplan", *sys.argv[1:]]
main()
"""

# Takes the S3 state lock with a short lease, prints its lock id, and keeps it until killed.
_HOLDER = """
import sys, time
from pathlib import Path
from state.s3_location import parse_s3_url
from state.s3_store import open_s3_store
store = open_s3_store(parse_s3_url(sys.argv[1]), Path("."), float(sys.argv[2]))
with store.lock("volplan apply"):
    print(store.state_lock.status().holder.lock_id, flush=True)
    time.sleep(120)
"""


def _state(s3: S3) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(s3.body(KEY))
    return data


def _s3_settings(project: Path, s3: S3, lease: str = "3s") -> None:
    write(
        project, "volplan.yml", f"state:\n  backend: s3\n  bucket: {s3.bucket}\n  key: {KEY}\n  lock_lease: {lease}\n"
    )


def _start(project: Path, *args: str, script: Path | None = None, **popen: Any) -> subprocess.Popen[str]:
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "engine"]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [*command, *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdin=subprocess.DEVNULL,
        text=True,
        **popen,
    )


def test_apply_writes_state_object(project: Path, local_root: Path, s3: S3) -> None:
    volume_file(project, "data")
    volume_file(project, "logs", size="10GB")

    applied = run(project, "--state", s3.url(KEY), "apply", "-y")
    again = run(project, "--state", s3.url(KEY), "plan", "--detailed-exitcode")

    assert applied.exit_code == 0, applied.output
    assert again.exit_code == 0, again.output
    state = _state(s3)
    assert [record["address"] for record in state["resources"]] == ["volume.data", "volume.logs"]
    assert s3.body(KEY).decode() == json.dumps(state, indent=2, sort_keys=True) + "\n"
    assert s3.keys(f"{KEY}.journal/") == []
    assert s3.keys(f"{KEY}.lock") == []
    assert not (project / "volplan.state.json").exists()


def test_settings_select_s3_with_endpoint(project: Path, local_root: Path, s3: S3, monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    write(
        project,
        "volplan.yml",
        f"state:\n  backend: s3\n  bucket: {s3.bucket}\n  key: {KEY}\n  region: eu-central-1\n"
        f"  endpoint_url: {s3.endpoint}\n",
    )
    volume_file(project, "data")

    applied = run(project, "apply", "-y")
    removed = run(project, "delete", "-f", "data.dstack.yml", "-y")

    assert applied.exit_code == 0, applied.output
    assert removed.exit_code == 0, removed.output
    assert _state(s3)["resources"] == []
    assert _state(s3)["serial"] == 3
    assert json.loads(s3.body(f"{KEY}.backup"))["serial"] == 2


def test_state_settings_errors(project: Path) -> None:
    write(project, "volplan.yml", "state:\n  backend: s4\n  bucket: [a]\n  lock_lease: 1s\n  region: x\n")

    result = run(project, "plan")

    assert result.exit_code == 1
    assert 'volplan.yml:2:12: state.backend: is not a state backend (found "s4"). Use local or s3.' in result.stderr
    assert "volplan.yml:3:11: state.bucket: must be a non-empty string" in result.stderr
    assert "state.lock_lease: must be at least 3 seconds" in result.stderr
    assert "Traceback" not in result.output


def test_invalid_s3_url(project: Path) -> None:
    result = run(project, "--state", "s3://only-a-bucket", "plan")

    assert result.exit_code == 1
    assert "Invalid S3 state URL" in result.stderr
    assert "expected s3://BUCKET/KEY" in result.stderr


def test_two_processes_apply_at_once(
    project: Path,
    local_root: Path,
    s3: S3,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    script = tmp_path / "recording_cli.py"
    script.write_text(_RECORDING_CLI)
    record = tmp_path / "lock-spans.jsonl"
    monkeypatch.setenv("LOCK_RECORD", str(record))
    volume_file(project, "first", size="1GB")
    volume_file(project, "second", size="1GB")
    url = s3.url(KEY)

    processes = [
        _start(
            project, "--state", url, "apply", "-y", "-f", f"{name}.dstack.yml", "--lock-timeout", "60s", script=script
        )
        for name in ("first", "second")
    ]
    results = [(process, *process.communicate(timeout=120)) for process in processes]

    for process, stdout, stderr in results:
        assert process.returncode == 0, stdout + stderr
    spans = sorted((json.loads(line) for line in record.read_text().splitlines()), key=lambda span: span[1])
    assert len(spans) == 2
    assert spans[0][2] <= spans[1][1], "both processes held the S3 lock at once"
    state = _state(s3)
    assert [record["address"] for record in state["resources"]] == ["volume.first", "volume.second"]
    # The first apply writes serial 1 (the new lineage) and then 2; the second adds one.
    assert state["serial"] == 3
    assert s3.keys(f"{KEY}.lock") == []


def test_killed_apply_lock_expires(project: Path, local_root: Path, s3: S3) -> None:
    _s3_settings(project, s3)
    for index in range(100):
        volume_file(project, f"v{index:03d}", size="1GB")
    with (project.parent / "killed-apply.log").open("w") as log:
        apply = _start(project, "apply", "-y", "--parallelism", "1", stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while len(s3.keys(f"{KEY}.journal/")) < 6 and apply.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert apply.poll() is None, "the apply ended before it could be killed"
    apply.send_signal(signal.SIGKILL)
    apply.wait(timeout=30)
    holder = json.loads(s3.body(f"{KEY}.lock"))
    assert holder["pid"] == apply.pid
    assert holder["lease_seconds"] == 3

    rejected = run(project, "apply", "-y")
    waited = run(project, "apply", "-y", "--lock-timeout", "60s")

    assert rejected.exit_code == 1
    assert "State locked" in rejected.stderr
    assert f"pid {apply.pid}" in rejected.stderr
    assert "expires by itself" in rejected.stderr
    assert waited.exit_code == 0, waited.output
    assert "previous holder of the state lock died" in waited.stderr
    assert f"pid {apply.pid}" in waited.stderr
    state = _state(s3)
    assert len(state["resources"]) == 100
    on_disk = {path.name for path in local_root.iterdir() if path.name.startswith("vol-")}
    assert on_disk == {record["id"] for record in state["resources"]}
    assert s3.keys(f"{KEY}.lock") == []
    assert s3.keys(f"{KEY}.journal/") == []


def test_live_holder_renews_lease(project: Path, local_root: Path, s3: S3) -> None:
    _s3_settings(project, s3)
    volume_file(project, "data")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, s3.url(KEY), "3"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        lock_id = holder.stdout.readline().strip()
        # Three leases long: only a heartbeat keeps the lock held that long.
        rejected = run(project, "apply", "-y", "--lock-timeout", "9s")
        cleared = run(project, "force-unlock", lock_id, "-y")
        applied = run(project, "apply", "-y")
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()

    assert rejected.exit_code == 1
    assert "still locked after waiting 9s" in rejected.stderr
    assert lock_id in rejected.stderr
    assert cleared.exit_code == 0, cleared.output
    assert f"Lock {lock_id} cleared" in cleared.stdout
    assert applied.exit_code == 0, applied.output
    assert "previous holder" not in applied.stderr
