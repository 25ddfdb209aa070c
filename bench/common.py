"""Helpers shared by the benchmarks: input generation, timing and the machine line."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
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
