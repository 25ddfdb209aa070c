"""dstack's own configuration parser against `volplan validate`, on the same files.

The script installs dstack from PyPI into a virtual environment of its own (dstack pins its
own pydantic and PyYAML, which must not meet volplan's), writes 2,000 four-node tasks and
8,000 volumes (10,000 files), and times, in fresh interpreters:

- dstack: every file through `load_apply_configuration`, the function `dstack apply -f FILE`
  calls (yaml.safe_load, then dstack's pydantic models), after importing it;
- volplan: `volplan validate` on the folder (discovery, YAML with positions, the models, and
  resolving volume names per node).

Each side runs `--repeat` times, alternating. The figure is the ratio of the medians.

    python -m bench.peer_dstack [--volumes 8000] [--runs 2000] [--repeat 3] [--venv DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import load_average, report, run_measured, spread, volplan_command, write_scale_project

DSTACK_VERSION = "0.22.5"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "volplan-bench-dstack"

# Runs in the dstack environment with the project folder as its working directory, because
# load_apply_configuration reports paths relative to it. Prints the seconds spent importing
# and parsing, and the number of files parsed.
_DSTACK_PARSE = """
import os, sys, time
started = time.perf_counter()
from dstack._internal.cli.services.configurators import load_apply_configuration
imported = time.perf_counter()
count = 0
for name in sorted(os.listdir(".")):
    if name.endswith(".dstack.yml"):
        load_apply_configuration(name)
        count += 1
print(imported - started, time.perf_counter() - imported, count)
"""


def ensure_dstack(venv: Path) -> str:
    """Create `venv` with dstack installed unless it already has it; return the installed version."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if _installed_version(python) is None:
        pinned = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"dstack=={DSTACK_VERSION}"], capture_output=True, text=True
        )
        if pinned.returncode != 0:
            print(f"dstack {DSTACK_VERSION} did not install, trying the newest:\n{pinned.stderr}", file=sys.stderr)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "dstack"], check=True)
    version = _installed_version(python)
    if version is None:
        raise SystemExit(f"dstack is not importable in {venv} after installing it")
    return version


def _installed_version(python: Path) -> str | None:
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dstack'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def time_dstack(venv: Path, project: Path) -> tuple[float, float, float, int]:
    """Parse every file with dstack; return wall, import and parse seconds and the file count."""
    started = time.perf_counter()
    output = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _DSTACK_PARSE],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    imported, parsed, count = output.stdout.split()
    return wall, float(imported), float(parsed), int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=8_000)
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where dstack is (or gets) installed")
    arguments = parser.parse_args()
    command = (
        f"python -m bench.peer_dstack --volumes {arguments.volumes} --runs {arguments.runs} --repeat {arguments.repeat}"
    )

    version = ensure_dstack(arguments.venv)
    with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
        project = Path(scratch) / "project"
        write_scale_project(project, arguments.volumes, arguments.runs)
        files = arguments.volumes + arguments.runs

        dstack_wall: list[float] = []
        dstack_parse: list[float] = []
        volplan_wall: list[float] = []
        for _ in range(arguments.repeat):
            wall, _, parsed, count = time_dstack(arguments.venv, project)
            if count != files:
                raise SystemExit(f"dstack parsed {count} files, expected {files}")
            dstack_wall.append(wall)
            dstack_parse.append(parsed)
            volplan_wall.append(run_measured(volplan_command(project, "validate")).wall)

    ratio = statistics.median(volplan_wall) / statistics.median(dstack_wall)
    report(
        f"parsing {files} files: volplan validate against dstack {version}",
        f"volplan {spread(volplan_wall)}, dstack {spread(dstack_wall)} (of which parsing {spread(dstack_parse)}), "
        f"volplan takes {ratio:.2f}x dstack's time, {load_average()}",
        command,
    )


if __name__ == "__main__":
    main()
