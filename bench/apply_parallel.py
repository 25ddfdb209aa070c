"""Parallel apply against a provider with fixed latencies, compared with the ideal schedule.

The provider is the local one wrapped so that each volume create waits 200 ms, each attach
100 ms and each node start 300 ms before doing its work (the waits model a cloud's response
time). The project contains `--runs` four-node tasks, each node mounting its own volume.
The apply runs in-process through engine.workflow.apply, once per parallelism.

The local provider's folders go to `--local-root` (default: /dev/shm, a memory file system,
where present). The local provider plays the cloud here. On disk, its fsyncs, which it makes
under one lock for all nodes, would add time that the fixed latencies already model.
The project, with the state and volplan's journal, stays in the system's temporary folder.

The bound for a parallelism P is the larger of the longest path through the plan graph,
weighted by the latencies, and the total latency divided by P: no schedule can beat either.
Target: wall time at most 1.2x the bound at --parallelism 50.

    python -m bench.apply_parallel [--runs 250] [--parallelism 50] [--repeat 3] [--serial-repeat 1]
                                   [--local-root DIR]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from bench.common import RUN_TASK, load_average, report, spread
from engine.actions import Action, Change
from engine.project import load_project
from engine.workflow import PlanOptions, Workspace, apply, prepare
from providers.base import MountSpec, NodeFacts, NodeSpec, VolumeFacts, VolumeSpec
from providers.local import LocalProvider
from providers.registry import ProviderSet
from state.store import LocalStateStore

_DEFAULT_ROOT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
CREATE_SECONDS = 0.2
ATTACH_SECONDS = 0.1
START_SECONDS = 0.3


class LatencyProvider(LocalProvider):
    """The local provider with a fixed wait before each create, attach and node start."""

    def create_volume(self, spec: VolumeSpec, token: str) -> VolumeFacts:
        time.sleep(CREATE_SECONDS)
        return super().create_volume(spec, token)

    def attach_volume(self, mount: MountSpec) -> None:
        time.sleep(ATTACH_SECONDS)
        super().attach_volume(mount)

    def start_node(self, spec: NodeSpec, token: str) -> NodeFacts:
        time.sleep(START_SECONDS)
        return super().start_node(spec, token)


def latency(change: Change) -> float:
    """Return the wait the wrapper adds to the step that carries out `change`."""
    if change.action is not Action.CREATE or change.after is None:
        return 0.0
    kind = change.after.get("kind")
    return {"volume": CREATE_SECONDS, "node": START_SECONDS, "mount": ATTACH_SECONDS}.get(str(kind), 0.0)


def longest_path_seconds(graph: nx.DiGraph) -> float:
    """Return the largest sum of latencies along any path of the plan graph."""
    finish: dict[str, float] = {}
    for address in nx.topological_sort(graph):
        start = max((finish[before] for before in graph.predecessors(address)), default=0.0)
        finish[address] = start + latency(graph.nodes[address]["change"])
    return max(finish.values(), default=0.0)


def write_project(folder: Path, runs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(runs):
        name = f"r{index:05d}"
        (folder / f"{name}.dstack.yml").write_text(RUN_TASK.format(name=name))
        for rank in range(4):
            (folder / f"{name}-{rank}.dstack.yml").write_text(
                f"type: volume\nname: {name}-{rank}\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n"
            )


def _workspace(project: Path, root: Path) -> Workspace:
    provider = LatencyProvider(root)

    def factory(kind: str, options: Mapping[str, Any]) -> LatencyProvider:
        return provider

    return Workspace(project, LocalStateStore(project / "volplan.state.json"), ProviderSet(factory=factory))


def plan_bound(runs: int) -> tuple[float, float, int]:
    """Plan the project once; return the longest path, the total latency and the step count."""
    with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
        project = Path(scratch) / "project"
        write_project(project, runs)
        prepared = prepare(_workspace(project, Path(scratch) / "root"), load_project(project), PlanOptions())
        total = sum(latency(change) for change in prepared.plan.actionable)
        return longest_path_seconds(prepared.graph), total, len(prepared.plan.actionable)


def timed_apply(runs: int, parallelism: int, local_root: Path | None = None) -> float:
    """Apply a fresh project at `parallelism`; return the wall seconds of the apply call."""
    with (
        tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch,
        tempfile.TemporaryDirectory(prefix="volplan-bench-root-", dir=local_root) as root,
    ):
        project = Path(scratch) / "project"
        write_project(project, runs)
        workspace = _workspace(project, Path(root))
        loaded = load_project(project)

        started = time.perf_counter()
        outcome = apply(
            workspace,
            loaded,
            PlanOptions(),
            command="bench",
            lock_timeout=0,
            parallelism=parallelism,
            confirm=lambda prepared: True,
        )
        elapsed = time.perf_counter() - started

        assert outcome.report is not None and outcome.report.ok, "the benchmark apply failed"
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=250, help="four-node tasks, each node with its own volume")
    parser.add_argument("--parallelism", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--serial-repeat", type=int, default=1, help="applies at --parallelism 1 (each takes the total latency)"
    )
    parser.add_argument(
        "--local-root", type=Path, default=_DEFAULT_ROOT, help="folder for the local provider's folders"
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    command = (
        f"python -m bench.apply_parallel --runs {arguments.runs} --parallelism {arguments.parallelism} "
        f"--repeat {arguments.repeat} --serial-repeat {arguments.serial_repeat} --local-root {arguments.local_root}"
    )

    longest, total, steps = plan_bound(arguments.runs)
    bound = max(longest, total / arguments.parallelism)
    report(
        f"bound for {steps} steps at parallelism {arguments.parallelism}",
        f"{bound:.2f} s (longest path {longest:.2f} s, total latency {total:.1f} s / {arguments.parallelism})",
        command,
    )

    parallel = [
        timed_apply(arguments.runs, arguments.parallelism, arguments.local_root) for _ in range(arguments.repeat)
    ]
    report(
        f"apply of {arguments.runs} four-node runs at parallelism {arguments.parallelism}",
        f"{spread(parallel)}, {statistics.median(parallel) / bound:.2f}x the bound (target at most 1.2x), "
        f"{load_average()}",
        command,
    )

    if arguments.serial_repeat > 0:
        serial = [timed_apply(arguments.runs, 1, arguments.local_root) for _ in range(arguments.serial_repeat)]
        report(
            f"apply of {arguments.runs} four-node runs at parallelism 1",
            f"{spread(serial, digits=1)}, {statistics.median(serial) / statistics.median(parallel):.1f}x the time "
            f"at parallelism {arguments.parallelism}, {statistics.median(serial) / total:.2f}x the total latency, "
            f"{load_average()}",
            command,
        )


if __name__ == "__main__":
    main()
