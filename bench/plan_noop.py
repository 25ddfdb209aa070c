"""No-op plan at scale on the local provider, against the floor of reading the same files.

The floor is parsing every configuration file with PyYAML's C loader and the state with
json.loads, in one process. The target is a plan within 3x the floor and under 400 MB.

    python -m bench.plan_noop [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report, run_volplan, write_volumes

_FLOOR = """
import json, sys, time, yaml
from pathlib import Path
started = time.perf_counter()
for path in sorted(Path(sys.argv[1]).rglob("*.dstack.yml")):
    yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
json.loads(Path(sys.argv[2]).read_bytes())
print(time.perf_counter() - started)
"""


def floor_seconds(project: Path) -> float:
    """Time the floor in a fresh interpreter, including its start-up, as the plan pays it too."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _FLOOR, str(project), str(project / "volplan.state.json")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000")
    arguments = parser.parse_args()

    per_resource: dict[int, float] = {}
    for count in (int(size) for size in arguments.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
            project = Path(scratch) / "project"
            write_volumes(project, count)
            env = {"VOLPLAN_LOCAL_ROOT": str(Path(scratch) / "root")}
            run_volplan(project, "apply", "--auto-approve", "--parallelism", "16", env=env)
            assert json.loads((project / "volplan.state.json").read_text())["resources"]

            floor = floor_seconds(project)
            seconds, _ = run_volplan(project, "plan", "--detailed-exitcode", env=env)
            peak = _peak_rss_mb(project, env)
            per_resource[count] = seconds / count
            command = f"python -m bench.plan_noop --sizes {count}"
            report(
                f"no-op plan of {count} volumes",
                f"{seconds:.2f} s (floor {floor:.2f} s, {seconds / floor:.2f}x; "
                f"target at most 3x), peak {peak} MB (target under 400 MB)",
                command,
            )

    sizes = sorted(per_resource)
    if len(sizes) > 1:
        ratio = per_resource[sizes[-1]] / per_resource[sizes[-2]]
        report(
            f"time per resource at {sizes[-1]} vs {sizes[-2]}",
            f"{ratio:.2f}x (target: at most 1.10x)",
            f"python -m bench.plan_noop --sizes {arguments.sizes}",
        )


def _peak_rss_mb(project: Path, env: dict[str, str]) -> int:
    """Run the plan once more under /usr/bin/time-like accounting of this child alone."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
    )
    import os

    output = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "engine", "-C", str(project), "plan", "--detailed-exitcode"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(output.stdout.strip())


if __name__ == "__main__":
    main()
