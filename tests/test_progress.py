"""Apply progress: live in a terminal, plain lines in a pipe, no escape sequences without colour."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from engine.actions import Action, Change
from engine.cli.progress import ApplyProgress, format_elapsed
from engine.errors import ProviderError
from engine.executor import StepResult, StepStatus
from tests.conftest import run_process, volume_file

REPOSITORY = Path(__file__).resolve().parent.parent


def fifty_volumes(project: Path) -> None:
    for number in range(1, 51):
        volume_file(project, f"v{number:02d}", size="10GB")


def run_in_terminal(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run volplan with stdin, stdout and stderr on a pseudo-terminal; return its exit code and output."""
    controller, terminal = pty.openpty()
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "TERM": "xterm-256color", "COLUMNS": "120"}
    environment.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=project,
        env={**environment, **(env or {})},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)

    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return process.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_apply_of_fifty_piped_prints_plain_lines(project: Path, local_root: Path) -> None:
    fifty_volumes(project)

    result = run_process(project, "apply", "--auto-approve")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(1 for line in lines if line.endswith(": Creating...")) == 50
    assert sum(1 for line in lines if ": Creation complete after " in line) == 50
    assert "volume.v37: Creating..." in lines
    assert "\x1b" not in result.stdout
    assert "Applying:" not in result.stdout
    table = lines.index(next(line for line in lines if line.startswith("ACTION")))
    assert lines[table].split() == ["ACTION", "SUCCEEDED", "FAILED", "SKIPPED", "SLOWEST"]
    assert lines[table + 1].split()[:4] == ["create", "50", "0", "0"]
    assert all(line == line.rstrip() for line in lines)
    assert "Apply complete! Volumes: 50 created" in result.stdout


def test_apply_of_fifty_in_terminal_is_live(project: Path, local_root: Path) -> None:
    fifty_volumes(project)

    code, output = run_in_terminal(project, "apply", "--auto-approve", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert code == 0, output
    assert "Applying:" in output
    assert "/50 done" in output
    assert "\x1b[?25l" in output  # the live region hides the cursor while it redraws
    assert "\x1b[32m+\x1b[0m" in output  # the plan's symbols are coloured
    for number in range(1, 51):
        assert f"volume.v{number:02d}: Creating..." in output
    assert output.count("Creation complete after") == 50
    assert "Apply complete!" in output


def test_no_color_in_terminal_has_no_escapes(project: Path, local_root: Path) -> None:
    fifty_volumes(project)

    code, output = run_in_terminal(
        project, "apply", "--auto-approve", env={"VOLPLAN_LOCAL_ROOT": str(local_root), "NO_COLOR": "1"}
    )

    assert code == 0, output
    assert "\x1b" not in output
    assert output.count("Creation complete after") == 50
    assert "Applying:" not in output


def test_no_color_flag_in_terminal_has_no_escapes(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    code, output = run_in_terminal(project, "apply", "-y", "--no-color", env={"VOLPLAN_LOCAL_ROOT": str(local_root)})

    assert code == 0, output
    assert "\x1b" not in output
    assert "volume.data: Creation complete after" in output


def test_errors_coloured_only_in_terminal(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="huge")
    environment = {"VOLPLAN_LOCAL_ROOT": str(local_root)}

    code, coloured = run_in_terminal(project, "plan", env=environment)
    _, plain = run_in_terminal(project, "plan", env={**environment, "NO_COLOR": "1"})
    piped = run_process(project, "plan", env=environment)

    assert code == 1
    assert "\x1b[31m\x1b[1mError: \x1b[0m" in coloured
    assert "Error: Invalid configuration" in plain
    assert "\x1b" not in plain
    assert "\x1b" not in piped.stderr
    assert piped.stderr.startswith("Error: Invalid configuration")


def change(address: str, action: Action = Action.CREATE) -> Change:
    return Change(address, action, "", None, {})


def terminal_progress() -> tuple[ApplyProgress, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, highlight=False, markup=False)
    return ApplyProgress(console, live=True), buffer


def test_live_region_shows_waits() -> None:
    progress, buffer = terminal_progress()
    detaching = change("volume.old", Action.DELETE)

    with progress:
        progress.step_started(detaching)
        progress.step_waiting(detaching, "detaching from run.train.node[0] (up to 5m, the run's stop_duration)")
        progress.refresh()
        rendered = buffer.getvalue()
        progress.step_finished(StepResult(detaching, StepStatus.SUCCEEDED, elapsed=12.0))

    assert "volume.old: detaching from run.train.node[0] (up to 5m, the run's stop_duration) [" in rendered
    assert "Applying: 0 done, 1 in progress" in rendered
    assert "volume.old: " in buffer.getvalue()
    assert "Destruction complete after 12s" in buffer.getvalue()


def test_plain_progress_prints_waits_and_still_lines() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, color_system=None, highlight=False, markup=False)
    progress = ApplyProgress(console, live=False, still_every=0.05)
    detaching = change("volume.old", Action.DELETE)

    with progress:
        progress.step_started(detaching)
        progress.step_waiting(detaching, "Detaching from run.train.node[0]")
        progress.step_waiting(detaching, "Detaching from run.train.node[0]")
        deadline = time.monotonic() + 10
        while "Still" not in buffer.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        progress.step_finished(StepResult(detaching, StepStatus.SUCCEEDED, elapsed=0.2))

    lines = buffer.getvalue().splitlines()
    assert lines[0] == "volume.old: Destroying..."
    assert lines.count("volume.old: Detaching from run.train.node[0]") == 1
    assert any(line.startswith("volume.old: Still detaching from run.train.node[0] [") for line in lines)
    assert "volume.old: Destruction complete after 0.2s" in lines
    assert "\x1b" not in buffer.getvalue()


def test_summary_table_counts_failures_and_skips() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, color_system=None, highlight=False, markup=False)
    progress = ApplyProgress(console, live=False)
    failure = ProviderError("Quota exceeded", "volume.b: the account may hold 10 volumes")

    with progress:
        progress.step_finished(StepResult(change("volume.a"), StepStatus.SUCCEEDED, elapsed=3.0))
        progress.step_finished(StepResult(change("volume.b"), StepStatus.FAILED, failure, elapsed=1.0))
        progress.step_finished(StepResult(change("volume.c"), StepStatus.SKIPPED, skipped_because="volume.b"))
        progress.step_finished(StepResult(change("volume.d", Action.DELETE), StepStatus.SUCCEEDED, elapsed=75))

    lines = buffer.getvalue().splitlines()
    assert "volume.b: failed after 1.0s: Quota exceeded: volume.b: the account may hold 10 volumes" in lines
    assert "volume.c: skipped because volume.b failed" in lines
    rows = {line.split()[0]: line.split() for line in lines[lines.index("") + 1 :]}
    assert rows["create"] == ["create", "1", "1", "1", "volume.a", "(3.0s)"]
    assert rows["delete"] == ["delete", "1", "0", "0", "volume.d", "(1m15s)"]


def test_elapsed_format() -> None:
    assert format_elapsed(0.04) == "0.0s"
    assert format_elapsed(9.94) == "9.9s"
    assert format_elapsed(12.4) == "12s"
    assert format_elapsed(185) == "3m05s"


def test_elapsed_counts_only_the_steps() -> None:
    progress, _ = terminal_progress()
    assert progress.elapsed == 0.0

    with progress:
        time.sleep(0.5)  # planning and approval happen before the first step
        progress.step_started(change("volume.a"))
        progress.step_finished(StepResult(change("volume.a"), StepStatus.SUCCEEDED, elapsed=0.0))
    time.sleep(0.5)

    assert progress.elapsed < 0.5
