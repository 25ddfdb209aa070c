"""Run every hostile-input fuzz target with a large budget and print the report.

    python scripts/fuzz.py                 # 10,000 examples per target
    python scripts/fuzz.py --examples 500 --target yaml --target cli

For each target the report gives the examples run, the exit codes seen, the state changes
made by failing commands (always 0, or the run fails) and the slowest example. The first
example that breaks a rule stops its target with hypothesis's shrunk example and the reason.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hostile_inputs import Tally, run_examples, sandbox, targets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per target (default: 10000)")
    parser.add_argument("--target", action="append", help="run only this target; repeatable")
    arguments = parser.parse_args()

    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    print(
        f"{'target':<10} {'examples':>9} {'exit 0':>7} {'exit 1':>7} {'exit 2':>7} {'uncaught':>9} "
        f"{'state changes on error':>23} {'slowest':>8} {'total':>8}"
    )
    failures = 0
    with sandbox() as box:
        for name, (strategy, check) in targets(box).items():
            if arguments.target and name not in arguments.target:
                continue
            failures += _run_target(name, strategy, check, arguments.examples)
    return 1 if failures else 0


def _run_target(name: str, strategy: object, check: object, examples: int) -> int:
    tally = Tally()
    started = time.perf_counter()
    failed = 0
    try:
        run_examples(strategy, check, examples, tally)()  # type: ignore[arg-type]
    except Exception:
        failed = 1
        traceback.print_exc()
    total = time.perf_counter() - started
    codes = tally.exit_codes
    print(
        f"{name:<10} {tally.examples:>9,} {codes[0]:>7,} {codes[1]:>7,} {codes[2]:>7,} {failed:>9} "
        f"{0 if not failed else 'see above':>23} {tally.slowest:>7.2f}s {total:>7.0f}s",
        flush=True,
    )
    return failed


if __name__ == "__main__":
    sys.exit(main())
