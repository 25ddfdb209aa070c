"""Growth of the no-op plan: the time per resource at several sizes, to catch a quadratic step.

Each size is measured as in bench.plan_noop (applied first, floor and plan alternating
`--repeat` times). By default the projects contain volumes only, because applying 20,000
four-node runs for the 100,000 size would take longer than the measurement itself. Pass
`--runs-per-volume 0.2` for the mix of bench.plan_noop. The target: the time per resource
at the largest size within 10% of that at the size before it.

    python -m bench.plan_growth [--sizes 1000,10000,100000] [--repeat 3] [--runs-per-volume 0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics

from bench.common import report
from bench.plan_noop import describe, measure_noop_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated volume counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs-per-volume", type=float, default=0.0)
    arguments = parser.parse_args()
    command = (
        f"python -m bench.plan_growth --sizes {arguments.sizes} --repeat {arguments.repeat} "
        f"--runs-per-volume {arguments.runs_per_volume}"
    )

    per_resource: dict[int, float] = {}
    for volumes in (int(size) for size in arguments.sizes.split(",")):
        runs = int(volumes * arguments.runs_per_volume)
        figures = measure_noop_plan(volumes, runs, arguments.repeat)
        per_resource[volumes] = statistics.median(plan.wall for plan in figures.plan) / figures.resources
        report(
            f"no-op plan of {volumes} volumes and {runs} runs",
            f"{describe(figures)}, {per_resource[volumes] * 1e6:.1f} us per resource",
            command,
        )

    sizes = sorted(per_resource)
    for smaller, larger in itertools.pairwise(sizes):
        report(
            f"time per resource at {larger} against {smaller}",
            f"{per_resource[larger] / per_resource[smaller]:.2f}x (target at most 1.10x)",
            command,
        )


if __name__ == "__main__":
    main()
