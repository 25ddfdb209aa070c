"""Volume name rendering at scale: N distinct templates, each rendered for several node ranks.

Prints the time per render for plain references (the fast path, no jinja2) and for expressions
that need jinja2's sandbox (compiled once per template, then cached), plus a whole-project
validate of N two-node tasks.

    python -m bench.render_templates [--templates 5000] [--ranks 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import report, run_volplan
from engine.templates import render_volume_name


def time_renders(templates: list[str], ranks: int) -> float:
    """Render every template for ranks 0..ranks-1; return seconds per render."""
    started = time.perf_counter()
    for template in templates:
        for rank in range(ranks):
            render_volume_name(template, rank)
    return (time.perf_counter() - started) / (len(templates) * ranks)


def write_tasks(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"t{index:06d}.dstack.yml").write_text(
            f"type: task\nnodes: 2\ncommands: [train]\nvolumes:\n  - d{index}-$<< dstack.node_rank >>:/data\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=5000, help="distinct templates")
    parser.add_argument("--ranks", type=int, default=4, help="node ranks each template is rendered for")
    arguments = parser.parse_args()
    count, ranks = arguments.templates, arguments.ranks

    command = f"python -m bench.render_templates --templates {count} --ranks {ranks}"
    plain = [f"data{index}-$<< dstack.node_rank >>" for index in range(count)]
    expressions = [f"data{index}-$<< dstack.node_rank + {index} >>" for index in range(count)]
    report("fast path, per render", f"{time_renders(plain, ranks) * 1e6:.1f} us", command)
    report("jinja2 sandbox, per render", f"{time_renders(expressions, ranks) * 1e6:.1f} us", command)

    with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch:
        project = Path(scratch) / "project"
        write_tasks(project, count)
        seconds, peak = run_volplan(project, "validate", env={})
        report(f"validate of {count} two-node tasks", f"{seconds:.2f} s, peak RSS {peak} MB", command)


if __name__ == "__main__":
    main()
