"""Where the time of a no-op plan goes: seconds per phase, measured inside `volplan plan`.

The script writes and applies the project of `bench.plan_noop` (`--volumes` volumes, `--runs`
four-node tasks), then runs `volplan plan` `--repeat` times, each in a fresh interpreter. In
that interpreter the functions that make up the phases are wrapped with `time.perf_counter`
timers before the command runs, so the plan takes its usual path. The wrappers add about a
microsecond per call, and each phase is called once. The script prints the median of each
phase over the repeats.

    python -m bench.plan_phases [--volumes 10000] [--runs 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import add_scale_arguments, applied_scale_project, load_average, report

# (module, attribute, phase): each attribute is wrapped where the command looks it up.
_PHASES = (
    ("engine.cli.common", "load_project", "loading the configuration files"),
    ("state.store", "LocalStateStore.read", "reading and checking the state"),
    ("engine.workflow", "refresh", "refreshing volumes"),
    ("engine.workflow", "refresh_nodes", "refreshing run nodes"),
    ("engine.workflow", "plan_changes", "planning"),
    ("engine.workflow", "find_drift", "finding drift"),
    ("engine.recovery", "find_leftovers", "listing leftovers of killed calls"),
)

_CHILD = """
import time
started = time.perf_counter()
import functools, importlib, json, sys
import engine.cli

imported = time.perf_counter()
phases = json.loads(sys.argv[2])
spent = {}


def timed(function, phase):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - begun
    return wrapper


for module_name, attribute, phase in phases:
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, timed(getattr(owner, name), phase))

sys.argv = ["volplan", "-C", sys.argv[1], "plan"]
try:
    engine.cli.main()
except SystemExit:
    pass
spent["imports"] = imported - started
spent["whole command"] = time.perf_counter() - started
print(json.dumps(spent), file=sys.stderr)
"""


def measure_phases(project: Path, env: dict[str, str]) -> dict[str, float]:
    """Run one `volplan plan` with timers around its phases; return seconds per phase."""
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(project), json.dumps(_PHASES)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    spent: dict[str, float] = json.loads(completed.stderr.strip().splitlines()[-1])
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scale_arguments(parser)
    arguments = parser.parse_args()
    command = (
        f"python -m bench.plan_phases --volumes {arguments.volumes} --runs {arguments.runs} --repeat {arguments.repeat}"
    )

    with applied_scale_project(arguments.volumes, arguments.runs) as (project, env):
        runs = [measure_phases(project, {**os.environ, **env}) for _ in range(arguments.repeat)]

    phases = ["imports", *(phase for _, _, phase in _PHASES), "whole command"]
    for phase in phases:
        if any(phase not in run for run in runs):
            # The command no longer goes through the wrapped function: the script needs updating.
            report(f"no-op plan, {phase}", "not called", command)
            continue
        median = statistics.median(run[phase] for run in runs)
        report(f"no-op plan, {phase}", f"{median:.3f} s (median of {len(runs)})", command)
    report("no-op plan, machine load", load_average(), command)


if __name__ == "__main__":
    main()
