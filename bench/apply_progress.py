"""Cost of apply progress output: one bulk apply piped, one on a pseudo-terminal with the live region.

The same N creates run twice on fresh local roots; the difference between the two wall times is
what drawing the live region costs.

    python -m bench.apply_progress [--count 2000] [--parallelism 10]
"""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report, write_volumes


def run_on_terminal(project: Path, args: list[str], env: dict[str, str]) -> float:
    """Run volplan with stdout on a pseudo-terminal, draining it; return the wall seconds."""
    controller, terminal = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "-C", str(project), *args],
        env={**os.environ, **env, "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    while True:
        try:
            if not os.read(controller, 65536):
                break
        except OSError:  # EIO: the child closed the terminal
            break
    os.close(controller)
    if process.wait() != 0:
        raise SystemExit(f"volplan {' '.join(args)} failed on the terminal")
    return time.perf_counter() - started


def run_piped(project: Path, args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "engine", "-C", str(project), *args],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.PIPE,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="volumes created in each apply")
    parser.add_argument("--parallelism", type=int, default=10)
    arguments = parser.parse_args()
    args = ["apply", "--auto-approve", "--parallelism", str(arguments.parallelism)]
    command = f"python -m bench.apply_progress --count {arguments.count} --parallelism {arguments.parallelism}"

    for mode, runner in (("piped", run_piped), ("terminal", run_on_terminal)):
        with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
            project = Path(scratch) / "project"
            write_volumes(project, arguments.count)
            seconds = runner(project, args, {"VOLPLAN_LOCAL_ROOT": str(Path(scratch) / "root")})
            report(f"apply of {arguments.count} creates, {mode}", f"{seconds:.1f} s wall", command)


if __name__ == "__main__":
    main()
