"""Bulk apply on the local provider: N creates in one apply, time per step at several sizes.

Recording a step must not cost more as the state grows, so the time per step at 10,000 should
stay within 20% of that at 1,000.

Each size is applied `--repeat` times, each time into a fresh folder; the script prints the
median and the range.

    python -m bench.apply_bulk [--sizes 1000,10000] [--parallelism 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import load_average, report, run_measured, spread, volplan_command, write_volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated volume counts")
    parser.add_argument("--parallelism", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()

    per_step: dict[int, float] = {}
    for count in (int(size) for size in arguments.sizes.split(",")):
        walls = [_apply_once(count, arguments.parallelism) for _ in range(arguments.repeat)]
        per_step[count] = statistics.median(walls) / count
        command = (
            f"python -m bench.apply_bulk --sizes {count} --parallelism {arguments.parallelism} "
            f"--repeat {arguments.repeat}"
        )
        report(
            f"apply of {count} creates",
            f"{spread(walls, digits=1)} wall, {per_step[count] * 1000:.2f} ms per step (median), {load_average()}",
            command,
        )

    sizes = sorted(per_step)
    if len(sizes) > 1:
        ratio = per_step[sizes[-1]] / per_step[sizes[0]]
        report(
            f"time per step at {sizes[-1]} vs {sizes[0]}",
            f"{ratio:.2f}x (target: at most 1.20x)",
            f"python -m bench.apply_bulk --sizes {arguments.sizes} --repeat {arguments.repeat}",
        )


def _apply_once(count: int, parallelism: int) -> float:
    with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
        project = Path(scratch) / "project"
        write_volumes(project, count)
        env = {"VOLPLAN_LOCAL_ROOT": str(Path(scratch) / "root")}
        command = volplan_command(project, "apply", "--auto-approve", "--parallelism", str(parallelism))
        return run_measured(command, env).wall


if __name__ == "__main__":
    main()
