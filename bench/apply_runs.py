"""Runs on the local provider: R two-node tasks, each node with its own volume, in one apply.

Each run adds seven steps (a run record, two volumes, two node starts, two attaches). The
script prints the wall time of the apply, of the plan that follows (which refreshes every
node) and of a destroy.

    python -m bench.apply_runs [--runs 50,200] [--parallelism 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import report, run_volplan

TASK = """type: task
nodes: 2
commands: [python train.py]
volumes:
  - r{index:05d}-$<< dstack.node_rank >>:/data
"""


def write_runs(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"r{index:05d}.dstack.yml").write_text(TASK.format(index=index))
        for rank in (0, 1):
            name = f"r{index:05d}-{rank}"
            (folder / f"{name}.dstack.yml").write_text(
                f"type: volume\nname: {name}\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="50,200", help="comma-separated run counts")
    parser.add_argument("--parallelism", type=int, default=10)
    arguments = parser.parse_args()

    for count in (int(size) for size in arguments.runs.split(",")):
        command = f"python -m bench.apply_runs --runs {count} --parallelism {arguments.parallelism}"
        with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
            project = Path(scratch) / "project"
            write_runs(project, count)
            env = {"VOLPLAN_LOCAL_ROOT": str(Path(scratch) / "root")}
            parallelism = ["--parallelism", str(arguments.parallelism)]

            seconds, _ = run_volplan(project, "apply", "--auto-approve", *parallelism, env=env)
            steps = count * 7
            report(f"apply of {count} two-node runs ({steps} steps)", f"{seconds:.1f} s wall", command)

            seconds, _ = run_volplan(project, "plan", "--detailed-exitcode", env=env)
            report(f"plan with {count} runs in the state ({count * 2} nodes refreshed)", f"{seconds:.1f} s", command)

            seconds, _ = run_volplan(project, "destroy", "--auto-approve", *parallelism, env=env)
            report(f"destroy of {count} two-node runs", f"{seconds:.1f} s wall", command)


if __name__ == "__main__":
    main()
