"""The long crash run: many seeds of the SIGKILL harness, with the figures for docs/reliability.md.

Each seed configures 200 local volumes and 20 two-node runs, each node mounting its own
volume. It kills `volplan apply` at random moments for a number of rounds on top of each
other. Then it lets an apply finish and checks that the provider contains exactly the
configured volumes, nodes and mounts. Run from the repository root:

    python -m scripts.crash_long [--seeds 50] [--rounds 8] [--first-seed 1] [--signal KILL]
                                 [--volumes 200] [--runs 20]

Exit status 1 when any seed broke an invariant; the seed is printed so that
`VOLPLAN_CRASH_SEED=SEED pytest tests/test_crash.py -k sigkill` replays it with 8 rounds
(the timing of each kill differs from run to run, so a replay may not hit the same moment).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine
from tests.crash_harness import CrashRun, RunWorkload, VolumeWorkload, Workload, run_crash_rounds

# Lines of the next apply's recovery report, counted over every seed.
_RECOVERY_LINES = {
    "finished steps read back from the journal": "finished step(s) that only the journal recorded",
    "volumes adopted through their token": "adopted volume",
    "nodes adopted through their token": "adopted node",
    "mounts adopted after an interrupted attach": "adopted the mount",
    "creates found to have made no volume": "an interrupted create made no volume",
    "interrupted deletes and detaches checked again": "an interrupted delete of",
    "temporary folders of volume creates removed": "temporary folder(s) of interrupted local creates",
    "trash folders of volume deletes removed": "folder(s) of interrupted local deletes",
    "temporary state files removed": "temporary file(s) of interrupted state writes",
    "temporary folders of node starts removed": "temporary folder(s) of interrupted node starts",
    "trash folders of node stops removed": "folder(s) of interrupted node stops",
    "mount records without their link dropped": "mount record(s) without their link",
    "volume attachments corrected": "volume attachment(s)",
}


def run_seed(seed: int, rounds: int, number: signal.Signals, count: int, runs: int) -> CrashRun:
    with tempfile.TemporaryDirectory(prefix="volplan-crash-") as scratch:
        folder = Path(scratch)
        project, logs = folder / "project", folder / "logs"
        project.mkdir()
        logs.mkdir()
        return run_crash_rounds(
            project,
            folder / "root",
            _workloads(count, runs),
            seed=seed,
            rounds=rounds,
            number=number,
            scratch=logs,
        )


def _workloads(volumes: int, runs: int) -> list[Workload]:
    workloads: list[Workload] = [VolumeWorkload(count=volumes)] if volumes else []
    return workloads + ([RunWorkload(count=runs)] if runs else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8, help="signalled applies per seed before the final one")
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20, help="two-node runs, each with a volume per node")
    parser.add_argument("--signal", default="KILL", choices=["KILL", "INT", "TERM"])
    arguments = parser.parse_args()
    number = signal.Signals[f"SIG{arguments.signal}"]

    started = time.monotonic()
    runs = []
    for seed in range(arguments.first_seed, arguments.first_seed + arguments.seeds):
        run = run_seed(seed, arguments.rounds, number, arguments.volumes, arguments.runs)
        runs.append(run)
        verdict = "ok" if not run.problems and run.final_exit_code == 0 and run.final_plan_exit_code == 0 else "FAILED"
        signalled = sum(1 for r in run.rounds if r.signalled)
        print(
            f"seed {seed}: {verdict}, {signalled}/{len(run.rounds)} applies signalled, {run.seconds:.1f} s", flush=True
        )
        for problem in run.problems[:20]:
            print(f"    {problem}", flush=True)

    _report(runs, arguments, number, time.monotonic() - started)
    return 1 if any(run.problems or run.final_exit_code or run.final_plan_exit_code for run in runs) else 0


def _report(runs: list[CrashRun], arguments: argparse.Namespace, number: signal.Signals, seconds: float) -> None:
    rounds = [r for run in runs for r in run.rounds]
    signalled = [r for r in rounds if r.signalled]
    failed = [run.seed for run in runs if run.problems or run.final_exit_code or run.final_plan_exit_code]
    by_mode = {mode: sum(1 for r in signalled if r.mode == mode) for mode in ("from start", "from first step")}
    outputs = [r.output for r in rounds] + [run.final_output for run in runs]
    recovering = sum(1 for output in outputs if "Recovered from an interrupted apply" in output)
    print()
    print(
        f"command: python -m scripts.crash_long --seeds {arguments.seeds} --first-seed {arguments.first_seed} "
        f"--rounds {arguments.rounds} --volumes {arguments.volumes} --runs {arguments.runs} --signal {arguments.signal}"
    )
    print(f"machine: {machine()}")
    print(f"seeds: {len(runs)}, failed: {len(failed)} {failed if failed else ''}")
    print(
        f"applies: {len(rounds)}, {number.name} landed in {len(signalled)} "
        f"({by_mode['from start']} timed from the start, {by_mode['from first step']} from the first step), "
        f"{len(rounds) - len(signalled)} finished first"
    )
    codes = sorted({r.exit_code for r in signalled})
    print(
        "exit codes of signalled applies: "
        + ", ".join(f"{code}: {sum(1 for r in signalled if r.exit_code == code)}" for code in codes)
    )
    startup = sum(1 for r in signalled if "Fatal Python error: init_" in r.output)
    print(f"signals that landed while the interpreter started, before volplan ran: {startup}")
    print(f"applies that began by recovering an earlier one: {recovering} of {len(outputs)}")
    for label, text in _RECOVERY_LINES.items():
        print(f"{label}: {sum(run.count_in_outputs(text) for run in runs)}")
    print(f"seconds per seed: median {statistics.median(run.seconds for run in runs):.1f}, total {seconds:.0f}")


if __name__ == "__main__":
    sys.exit(main())
