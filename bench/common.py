"""Helpers shared by the benchmarks: input generation, timing and the machine line."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def machine() -> str:
    cpus = os.cpu_count() or 0
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cpus} cores, {memory_gib:.0f} GiB, Python {platform.python_version()}"


def write_volumes(folder: Path, count: int, size: str = "1GB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"v{index:06d}.dstack.yml").write_text(
            f"type: volume\nname: v{index:06d}\nbackend: aws\nregion: eu-central-1\nsize: {size}\n"
        )


def run_volplan(project: Path, *args: str, env: dict[str, str]) -> tuple[float, int]:
    """Run volplan in a subprocess; return wall seconds and the child's peak RSS in MB."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "engine", "-C", str(project), *args],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, int(peak_mb)


def report(name: str, value: str, command: str) -> None:
    print(f"{name}: {value} | command: {command} | machine: {machine()}", flush=True)


def load_average() -> str:
    """Format the 1-, 5- and 15-minute load averages, which show how busy the shared machine was."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def spread(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    """Format the median and the range of repeated measurements, as "0.92 s (0.90 to 1.10, 3 runs)"."""
    median = statistics.median(values)
    return f"{median:.{digits}f} {unit} ({min(values):.{digits}f} to {max(values):.{digits}f}, {len(values)} runs)"


@dataclass
class Measurement:
    """One child process: wall seconds, CPU seconds (user and system) and peak RSS in MB."""

    wall: float
    cpu: float
    peak_mb: int


def run_measured(command: Sequence[str], env: dict[str, str] | None = None) -> Measurement:
    """Run `command` to completion and measure it.

    os.wait4 returns the resource usage of that one child, so the figures are not mixed up
    with earlier children of this process (RUSAGE_CHILDREN keeps the maximum over all of them).
    CPU time varies less than wall time on a shared machine, so it is reported beside it.
    """
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, list(command))
    return Measurement(elapsed, usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss / 1024))


def volplan_command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "-C", str(project), *args]


RUN_TASK = """type: task
nodes: 4
commands: [python train.py]
volumes:
  - {name}-$<< dstack.node_rank >>:/data
"""


def write_scale_project(folder: Path, volumes: int, runs: int) -> None:
    """Write `volumes` volume files, of which 4 * `runs` are mounted by four-node tasks, one per node."""
    if runs * 4 > volumes:
        raise ValueError(f"{runs} four-node runs need {runs * 4} volumes, more than {volumes}")
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(runs):
        name = f"r{index:06d}"
        (folder / f"{name}.dstack.yml").write_text(RUN_TASK.format(name=name))
        for rank in range(4):
            _write_volume(folder, f"{name}-{rank}")
    for index in range(volumes - runs * 4):
        _write_volume(folder, f"v{index:06d}")


def _write_volume(folder: Path, name: str) -> None:
    (folder / f"{name}.dstack.yml").write_text(
        f"type: volume\nname: {name}\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n"
    )


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the size of the no-op plan project: --volumes, --runs and --repeat."""
    parser.add_argument("--volumes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2_000, help="four-node tasks, each mounting four of the volumes")
    parser.add_argument("--repeat", type=int, default=3)


@contextmanager
def applied_scale_project(volumes: int, runs: int) -> Iterator[tuple[Path, dict[str, str]]]:
    """Write the project of write_scale_project in a temporary folder and apply it.

    Yields the project folder and the environment that points volplan at its local provider's folders.
    """
    with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
        project = Path(scratch) / "project"
        write_scale_project(project, volumes, runs)
        env = {"VOLPLAN_LOCAL_ROOT": str(Path(scratch) / "root")}
        run_measured(volplan_command(project, "apply", "--auto-approve", "--parallelism", "16"), env)
        yield project, env
