"""The pause of the cyclic garbage collector around loading and planning."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine.collection
from engine.collection import freeze_after_pauses, paused_collection
from tests.conftest import volume_file


@pytest.fixture(autouse=True)
def _restore_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(engine.collection, "_freeze_after_pauses", False)
    yield
    gc.unfreeze()
    gc.enable()


def test_collector_off_inside_on_after() -> None:
    assert gc.isenabled()
    frozen = gc.get_freeze_count()

    with paused_collection():
        assert not gc.isenabled()

    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_freeze_only_when_asked() -> None:
    freeze_after_pauses()

    with paused_collection():
        records = [{"record": index} for index in range(1000)]

    assert gc.get_freeze_count() >= len(records)


def test_collector_on_after_error() -> None:
    with pytest.raises(ValueError), paused_collection():
        raise ValueError("planning failed")

    assert gc.isenabled()


def test_nested_pause_keeps_outer() -> None:
    with paused_collection():
        with paused_collection():
            pass
        assert not gc.isenabled()

    assert gc.isenabled()


def test_commands_in_one_process_keep_no_files(project: Path, local_root: Path) -> None:
    # Many commands in one process, as in a library caller: each provider's files must be freed.
    volume_file(project, "data")
    script = (
        "import gc, os, sys\n"
        "from click.testing import CliRunner\n"
        "from engine.cli import cli\n"
        "runner = CliRunner()\n"
        "for _ in range(30):\n"
        "    for command in (['apply', '-y'], ['destroy', '-y']):\n"
        "        result = runner.invoke(cli, ['-C', sys.argv[1], *command], catch_exceptions=False)\n"
        "        assert result.exit_code == 0, result.output\n"
        "gc.collect()\n"
        "print(len(os.listdir('/proc/self/fd')))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script, str(project)],
        env={**os.environ, "VOLPLAN_LOCAL_ROOT": str(local_root)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout.strip()) < 20
