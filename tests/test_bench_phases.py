"""The phase benchmark runs the real plan and names every phase it times (no timing is checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def test_plan_phases_reports_each_phase() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.plan_phases", "--volumes", "8", "--runs", "1", "--repeat", "1"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    for phase in ("imports", "loading the configuration files", "refreshing run nodes", "planning", "whole command"):
        assert f"no-op plan, {phase}: " in completed.stdout
    assert "(median of 1)" in completed.stdout
    assert "not called" not in completed.stdout
