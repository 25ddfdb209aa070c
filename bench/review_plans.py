"""Review features at scale: Markdown plans of many changes, and state merges of many volumes.

Prints, for each size, the time to render the Markdown plan and its length in characters, and
the time to merge two branches that each added half of the volumes to a common state.

    python -m bench.review_plans [--changes 500,5000] [--volumes 10000]
"""

from __future__ import annotations

import argparse
import time

from bench.common import report
from engine.actions import Action, Change, Plan
from engine.render_markdown import render_markdown
from state.merge import merge_states
from state.model import State


def volume_record(index: int, size: int = 100) -> dict[str, object]:
    name = f"v{index:06d}"
    return {
        "address": f"volume.{name}",
        "kind": "volume",
        "name": name,
        "backend": "aws",
        "region": "eu-central-1",
        "size_gb": size,
        "id": f"vol-{index:017x}",
        "provider": "local",
        "external": False,
        "tags": {},
        "file": f"{name}.dstack.yml",
    }


def mixed_plan(count: int) -> Plan:
    """Creates, updates and deletes in equal parts."""
    changes = []
    for index in range(count):
        record = volume_record(index)
        address = str(record["address"])
        if index % 3 == 0:
            changes.append(Change(address, Action.CREATE, "new", None, record))
        elif index % 3 == 1:
            changes.append(Change(address, Action.UPDATE, "grows", record, volume_record(index, 200)))
        else:
            changes.append(Change(address, Action.DELETE, "gone", record, None, destroys_data=True))
    return Plan(changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", default="500,5000", help="comma-separated plan sizes")
    parser.add_argument("--volumes", type=int, default=10000, help="volumes in the merged state")
    arguments = parser.parse_args()
    command = f"python -m bench.review_plans --changes {arguments.changes} --volumes {arguments.volumes}"

    for count in (int(text) for text in arguments.changes.split(",")):
        plan = mixed_plan(count)
        started = time.perf_counter()
        text = render_markdown(plan)
        elapsed = time.perf_counter() - started
        report(f"markdown plan of {count} changes", f"{elapsed * 1000:.0f} ms, {len(text):,} characters", command)

    half = arguments.volumes // 2
    lineage = "6f1c0c1e-3b7a-4c55-9a57-0c8f3f3f0d11"
    base = State(lineage, 1, {})
    ours = State(lineage, 2, {str(r["address"]): r for r in map(volume_record, range(half))})
    theirs = State(lineage, 2, {str(r["address"]): r for r in map(volume_record, range(half, 2 * half))})
    started = time.perf_counter()
    merged = merge_states(base, ours, theirs)
    elapsed = time.perf_counter() - started
    report(f"state merge to {len(merged.resources)} volumes", f"{elapsed * 1000:.0f} ms", command)


if __name__ == "__main__":
    main()
