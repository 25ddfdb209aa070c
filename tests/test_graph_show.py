"""graph (DOT and Mermaid of the plan's dependency graph) and show (the state, human or JSON)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pydot
import pytest

from engine.actions import Action, Change, Plan
from engine.cli.graph import to_dot, to_mermaid
from engine.planner import build_graph
from tests.conftest import run, run_process, volume_file

NODE = "run.train.node[0]"
MOUNT = "run.train.node[0].mount[/data]"


def plan_with_edges() -> Plan:
    """A plan with dependencies, as a plan with runs has them: volume and node before the mount."""
    changes = [
        Change("volume.old", Action.DELETE, "gone", {"name": "old"}, None),
        Change("volume.data", Action.CREATE, "new", None, {"name": "data"}),
        Change(NODE, Action.CREATE, "new", None, {}),
        Change(MOUNT, Action.CREATE, "new", None, {}),
        Change("volume.same", Action.NO_OP, "same", {}, {}),
    ]
    edges = [("volume.data", MOUNT), (NODE, MOUNT), ("volume.old", "volume.data")]
    return Plan(changes, edges=edges)


def parse_dot(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Return the labels by node name and the edges of a DOT text, as pydot parses them."""
    parsed = pydot.graph_from_dot_data(text)
    assert parsed is not None and len(parsed) == 1
    dot = parsed[0]
    nodes = [node for node in dot.get_nodes() if node.get_name() not in ("node", "edge", "graph")]
    labels = {node.get_name().strip('"'): node.get_label().strip('"') for node in nodes}
    edges = {(edge.get_source().strip('"'), edge.get_destination().strip('"')) for edge in dot.get_edges()}
    return labels, edges


def test_dot_matches_plan_edges() -> None:
    plan = plan_with_edges()

    labels, edges = parse_dot(to_dot(plan, build_graph(plan)))

    assert edges == set(plan.edges)
    assert labels == {
        "volume.old": "volume.old\\ndelete",
        "volume.data": "volume.data\\ncreate",
        NODE: f"{NODE}\\ncreate",
        MOUNT: f"{MOUNT}\\ncreate",
    }


def test_dot_escapes_quotes_in_addresses() -> None:
    plan = Plan([Change('volume.we"ird', Action.CREATE, "", None, {})])

    labels, _ = parse_dot(to_dot(plan, build_graph(plan)))

    assert list(labels) == ['volume.we\\"ird']


def test_mermaid_matches_plan_edges() -> None:
    plan = plan_with_edges()

    text = to_mermaid(plan, build_graph(plan))

    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    ids = dict(re.findall(r'^  (n\d+)\["([^<]+)<br/>', text, flags=re.MULTILINE))
    edges = {(ids[a], ids[b]) for a, b in re.findall(r"^  (n\d+) --> (n\d+)$", text, flags=re.MULTILINE)}
    assert edges == set(plan.edges)
    assert '  n4["run.train.node[0].mount[/data]<br/>create"]:::create' in lines
    assert "  classDef delete stroke:#cd0000" in lines


def test_graph_command_matches_plan(project: Path, local_root: Path) -> None:
    volume_file(project, "data")
    volume_file(project, "logs")
    volume_file(project, "kept")
    assert run(project, "apply", "-y", "-f", "kept.dstack.yml").exit_code == 0
    (project / "kept.dstack.yml").unlink()

    result = run(project, "graph")
    planned = json.loads(run(project, "plan", "--json").stdout)

    assert result.exit_code == 0, result.output
    labels, edges = parse_dot(result.stdout)
    expected = {c["address"]: c["action"] for c in planned["changes"] if c["action"] != "no-op"}
    assert {name: label.split("\\n")[1] for name, label in labels.items()} == expected
    assert expected == {"volume.data": "create", "volume.logs": "create", "volume.kept": "delete"}
    assert edges == set()  # volumes alone have no dependencies


def test_graph_with_no_changes_is_valid_dot(project: Path, local_root: Path) -> None:
    result = run(project, "graph")

    assert result.exit_code == 0, result.output
    assert parse_dot(result.stdout) == ({}, set())


def test_graph_writes_dot_file(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "graph", "--output", "plan.gv")

    assert result.exit_code == 0, result.output
    assert "Wrote plan.gv: 1 change, 0 dependencies." in result.stdout
    assert parse_dot((project / "plan.gv").read_text())[0] == {"volume.data": "volume.data\\ncreate"}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_draws_svg_with_graphviz(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run_process(project, "graph", "--output", "plan.svg")

    assert result.returncode == 0, result.stderr
    svg = (project / "plan.svg").read_text()
    assert "<svg" in svg
    assert "volume.data" in svg


def test_graph_svg_without_graphviz_says_how_to_install(project: Path, local_root: Path, tmp_path: Path) -> None:
    volume_file(project, "data")
    empty = tmp_path / "empty-path"
    empty.mkdir()

    result = run_process(project, "graph", "--output", "plan.svg", env={"PATH": str(empty)})

    assert result.returncode == 1
    assert result.stderr.startswith("Error: Graphviz not installed")
    assert "apt-get install graphviz" in result.stderr
    assert "brew install graphviz" in result.stderr
    assert not (project / "plan.svg").exists()


def test_graph_mermaid_image_is_rejected(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "graph", "--format", "mermaid", "--output", "plan.png")

    assert result.exit_code == 1
    assert "Cannot draw Mermaid" in result.stderr


def test_show_without_state(project: Path, local_root: Path) -> None:
    human = run(project, "show")
    as_json = run(project, "show", "--json")

    assert human.exit_code == 0
    assert human.stdout == f"No state: {project / 'volplan.state.json'} does not exist yet. volplan apply creates it.\n"
    assert json.loads(as_json.stdout) is None


def test_show_state_human_and_json(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="20GB", extra="auto_cleanup_duration: 1w\n")
    volume_file(project, "logs")
    run(project, "apply", "-y")
    state_text = (project / "volplan.state.json").read_text()
    state = json.loads(state_text)

    human = run(project, "show")
    as_json = run(project, "show", "--json")

    assert as_json.exit_code == 0
    assert as_json.stdout == state_text
    lines = human.stdout.splitlines()
    assert lines[0] == (
        f"State: {project / 'volplan.state.json'} (serial {state['serial']}, lineage {state['lineage']}, 2 resources)"
    )
    data = state["resources"][0]
    block = lines[lines.index("# volume.data") :]
    assert block[1] == 'volume "data" {'
    assert f'    id                    = "{data["id"]}"' in block
    assert "    size_gb               = 20" in block
    assert "    auto_cleanup_duration = 604800  # 1w" in block
    assert "# volume.logs" in lines


def test_show_state_file_argument(project: Path, local_root: Path, tmp_path: Path) -> None:
    volume_file(project, "data", size="10GB")
    run(project, "apply", "-y")
    volume_file(project, "data", size="11GB")
    run(project, "apply", "-y")

    backup = run(project, "show", "--json", "volplan.state.json.backup")

    assert backup.exit_code == 0, backup.output
    assert json.loads(backup.stdout)["resources"][0]["size_gb"] == 10


def test_show_rejects_other_files(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    missing = run(project, "show", "nope.json")
    other = run(project, "show", "data.dstack.yml")

    assert missing.exit_code == 1
    assert "Error: File not found" in missing.stderr
    assert other.exit_code == 1
    assert "Error: Not a state file" in other.stderr
    assert "data.dstack.yml is not a volplan state file" in other.stderr
