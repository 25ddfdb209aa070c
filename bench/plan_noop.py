"""No-op plan at scale on the local provider, against the floor of reading the same files.

The project contains `--volumes` volumes, of which four per run are mounted by `--runs` four-node
tasks (one volume per node). Everything is applied first, then `volplan plan` runs with
nothing to change. The floor is parsing every configuration file with PyYAML's C loader and
the state with json.loads, in a fresh interpreter, as the plan pays for its start-up too.
Floor and plan alternate `--repeat` times on the same files, and the script prints the median
and the range of each. Targets: plan at most 3x the floor, peak memory under 400 MB.

    python -m bench.plan_noop [--volumes 10000] [--runs 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    Measurement,
    add_scale_arguments,
    applied_scale_project,
    load_average,
    report,
    run_measured,
    spread,
    volplan_command,
)

_FLOOR = """
import json, os, sys, yaml
for folder, _, names in os.walk(sys.argv[1]):
    for name in names:
        if name.endswith(".dstack.yml"):
            with open(os.path.join(folder, name), "rb") as file:
                yaml.load(file.read(), Loader=yaml.CSafeLoader)
with open(sys.argv[2], "rb") as file:
    json.loads(file.read())
"""


@dataclass
class NoopFigures:
    """Repeated measurements of one no-op plan and of its floor, taken in alternation."""

    plan: list[Measurement] = field(default_factory=list)
    floor: list[Measurement] = field(default_factory=list)
    resources: int = 0

    @property
    def ratio(self) -> float:
        """The median over the repeats of plan wall time divided by the floor's, pair by pair."""
        return statistics.median(plan.wall / floor.wall for plan, floor in zip(self.plan, self.floor, strict=True))

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(plan.cpu / floor.cpu for plan, floor in zip(self.plan, self.floor, strict=True))


def measure_floor(project: Path) -> Measurement:
    return run_measured([sys.executable, "-c", _FLOOR, str(project), str(project / "volplan.state.json")])


def measure_noop_plan(volumes: int, runs: int, repeat: int) -> NoopFigures:
    """Apply a generated project, then time the floor and the no-op plan `repeat` times each."""
    with applied_scale_project(volumes, runs) as (project, env):
        figures = NoopFigures(resources=volumes + runs * 9)
        for _ in range(repeat):
            figures.floor.append(measure_floor(project))
            figures.plan.append(run_measured(volplan_command(project, "plan", "--detailed-exitcode"), env))
        return figures


def describe(figures: NoopFigures) -> str:
    peak = max(plan.peak_mb for plan in figures.plan)
    return (
        f"plan {spread([plan.wall for plan in figures.plan])}, floor {spread([floor.wall for floor in figures.floor])}, "
        f"{figures.ratio:.2f}x the floor (median of the pairs; target at most 3x); "
        f"CPU plan {spread([plan.cpu for plan in figures.plan])}, floor {spread([floor.cpu for floor in figures.floor])}, "
        f"{figures.cpu_ratio:.2f}x; peak {peak} MB (target under 400 MB), {load_average()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scale_arguments(parser)
    arguments = parser.parse_args()

    figures = measure_noop_plan(arguments.volumes, arguments.runs, arguments.repeat)
    report(
        f"no-op plan of {arguments.volumes} volumes and {arguments.runs} four-node runs "
        f"({figures.resources} resources in the state)",
        describe(figures),
        f"python -m bench.plan_noop --volumes {arguments.volumes} --runs {arguments.runs} --repeat {arguments.repeat}",
    )


if __name__ == "__main__":
    main()
