"""graph: the plan's dependency graph as DOT or Mermaid, or drawn as an image by Graphviz."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.actions import Action, Change, Plan
from engine.cli.common import GlobalOptions, file_option, load, make_workspace, refresh_option, replace_option
from engine.errors import UsageError, VolplanError
from engine.workflow import PlanOptions, prepare

if TYPE_CHECKING:
    import networkx as nx

# Output file suffixes that Graphviz's dot draws; any other suffix gets the text itself.
IMAGE_FORMATS = ("svg", "png", "pdf")
GRAPHVIZ_INSTALL = (
    "Install Graphviz (Debian or Ubuntu: sudo apt-get install graphviz; Fedora: sudo dnf install graphviz; "
    "macOS: brew install graphviz; others: https://graphviz.org/download/)"
)

# Node colours by action, in Graphviz's colour names; Mermaid gets the same through classDef.
_COLOURS = {
    Action.CREATE: "darkgreen",
    Action.REGISTER: "darkgreen",
    Action.UPDATE: "darkgoldenrod",
    Action.REPLACE: "darkmagenta",
    Action.DELETE: "red3",
    Action.DEREGISTER: "red3",
}
_MERMAID_COLOURS = {"darkgreen": "#006400", "darkgoldenrod": "#b8860b", "darkmagenta": "#8b008b", "red3": "#cd0000"}


@click.command()
@file_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["dot", "mermaid"]),
    default="dot",
    show_default=True,
    help="Text format: Graphviz DOT or a Mermaid flowchart.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (relative to the project folder) instead of stdout; a .svg, .png or .pdf file is drawn with Graphviz's dot.",
)
@refresh_option
@replace_option
@click.pass_obj
def graph(
    options: GlobalOptions,
    files: tuple[str, ...],
    output_format: str,
    output: Path | None,
    refresh: bool,
    allow_replace: bool,
) -> int:
    """Print the plan's steps and the order they run in, as a graph. Writes no state.

    Each node is a change, labelled with its address and action; an arrow points from a step to a
    step that waits for it. Only changes are drawn: resources that stay as they are have no node.

    \b
    Example:
      volplan graph | dot -Tsvg > plan.svg
      volplan graph --output plan.svg
      volplan graph --format mermaid
    """
    project = load(options, files)
    workspace = make_workspace(options, project)
    prepared = prepare(workspace, project, PlanOptions(refresh=refresh, allow_replace=allow_replace))
    text = (
        to_dot(prepared.plan, prepared.graph) if output_format == "dot" else to_mermaid(prepared.plan, prepared.graph)
    )

    if output is None:
        click.echo(text, nl=False)
        return 0
    _write(text, options.directory / output, output_format)
    changes, dependencies = prepared.graph.number_of_nodes(), prepared.graph.number_of_edges()
    click.echo(f"Wrote {output}: {_count(changes, 'change')}, {_count(dependencies, 'dependency', 'dependencies')}.")
    return 0


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def ordered_nodes(plan: Plan, graph: nx.DiGraph) -> list[Change]:
    """List the graph's changes in the plan's execution order, so the text is stable."""
    return [change for change in plan.actionable if change.address in graph]


def ordered_edges(plan: Plan, graph: nx.DiGraph) -> list[tuple[str, str]]:
    position = {change.address: index for index, change in enumerate(plan.actionable)}
    return sorted(graph.edges, key=lambda edge: (position[edge[0]], position[edge[1]]))


def to_dot(plan: Plan, graph: nx.DiGraph) -> str:
    """Render the graph as Graphviz DOT; an edge (a, b) means b waits for a."""
    lines = [
        "digraph plan {",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    changes = ordered_nodes(plan, graph)
    if not changes:
        lines.append("  // No changes: the plan is empty.")
    for change in changes:
        label = _dot_escape(change.address) + "\\n" + change.action.value
        lines.append(f'  {_dot_id(change.address)} [label="{label}", color={_COLOURS[change.action]}];')
    for before, after in ordered_edges(plan, graph):
        lines.append(f"  {_dot_id(before)} -> {_dot_id(after)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(plan: Plan, graph: nx.DiGraph) -> str:
    """Render the graph as a Mermaid flowchart, with node ids n1, n2, ... in execution order."""
    lines = ["flowchart LR"]
    changes = ordered_nodes(plan, graph)
    if not changes:
        lines.append("  %% No changes: the plan is empty.")
    ids = {change.address: f"n{index}" for index, change in enumerate(changes, start=1)}
    for change in changes:
        label = _mermaid_escape(change.address) + "<br/>" + change.action.value
        lines.append(f'  {ids[change.address]}["{label}"]:::{change.action.value}')
    for before, after in ordered_edges(plan, graph):
        lines.append(f"  {ids[before]} --> {ids[after]}")
    for action in sorted({change.action for change in changes}, key=lambda a: a.value):
        lines.append(f"  classDef {action.value} stroke:{_MERMAID_COLOURS[_COLOURS[action]]}")
    return "\n".join(lines) + "\n"


def _dot_id(address: str) -> str:
    return f'"{_dot_escape(address)}"'


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _mermaid_escape(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _write(text: str, output: Path, output_format: str) -> None:
    image_format = output.suffix.lower().lstrip(".")
    if image_format not in IMAGE_FORMATS:
        output.write_text(text, encoding="utf-8")
        return
    if output_format != "dot":
        raise UsageError(
            "Cannot draw Mermaid",
            f"--output {output} asks for an image, which volplan draws from DOT with Graphviz. "
            "Drop --format mermaid, or write the Mermaid text to a .mmd file.",
        )
    draw_with_graphviz(text, output, image_format)


def draw_with_graphviz(text: str, output: Path, image_format: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise VolplanError(
            "Graphviz not installed",
            f"drawing {output} needs Graphviz's dot program, which is not on PATH. {GRAPHVIZ_INSTALL}; "
            "or write DOT text with --output plan.dot and draw it elsewhere.",
        )
    result = subprocess.run(
        [dot, f"-T{image_format}", "-o", str(output)], input=text, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise VolplanError(
            "Graphviz failed",
            f"{dot} -T{image_format} -o {output} exited with code {result.returncode}: {result.stderr.strip()}",
        )
