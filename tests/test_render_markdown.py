"""The Markdown plan: a pull-request comment that stays under GitHub's limit, destructive first."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from engine.actions import Action, Change, Plan
from engine.drift import Drift, DriftKind
from engine.render_markdown import MAX_COMMENT_CHARS, render_markdown
from tests.conftest import run, volume_file


def record(name: str, size: int = 100, region: str = "eu-central-1", **extra: object) -> dict[str, object]:
    return {
        "address": f"volume.{name}",
        "kind": "volume",
        "name": name,
        "backend": "aws",
        "region": region,
        "size_gb": size,
        "id": f"vol-{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:17]}",
        "provider": "local",
        "external": False,
        "tags": {"team": "ml"},
        "file": f"{name}.dstack.yml",
        **extra,
    }


def mixed_plan(count: int) -> Plan:
    """A plan of `count` changes, creates listed first as the planner never would."""
    changes = []
    for index in range(count):
        name = f"volume-{index:04d}"
        kind = index % 4
        if kind == 0:
            changes.append(
                Change(f"volume.{name}", Action.CREATE, f"{name}.dstack.yml defines a new volume", None, record(name))
            )
        elif kind == 1:
            before, after = record(name), record(name, size=200)
            changes.append(
                Change(
                    f"volume.{name}",
                    Action.UPDATE,
                    "size grows from 100GB to 200GB",
                    before,
                    after,
                    changed_fields=("size_gb",),
                )
            )
        elif kind == 2:
            reason = "its configuration is gone; the volume (100GB) and its data will be destroyed"
            changes.append(Change(f"volume.{name}", Action.DELETE, reason, record(name), None, destroys_data=True))
        else:
            changes.append(
                Change(
                    f"volume.{name}", Action.DEREGISTER, "its configuration is gone", record(name, external=True), None
                )
            )
    return Plan(changes)


def detail_actions(text: str) -> list[str]:
    return re.findall(r"<details><summary><b>([a-z-]+)</b>", text)


def test_500_changes_stay_under_limit() -> None:
    text = render_markdown(mixed_plan(500))

    assert len(text) < MAX_COMMENT_CHARS
    assert "| delete | 125 |" in text
    assert "| create | 125 |" in text
    assert "**Plan: 125 to create, 125 to update, 125 to delete, 125 to deregister.**" in text
    assert "this comment was cut to stay under 60,000 characters" in text
    assert text.rstrip().endswith("for a file a program can read.")


def test_500_changes_list_deletes_first() -> None:
    text = render_markdown(mixed_plan(500))

    destructive = text.split("### Destructive changes", 1)[1].split("###", 1)[0]
    actions = detail_actions(text)
    table = re.findall(r"^\| ([a-z-]+) \| \d+ \|$", text, flags=re.MULTILINE)

    assert table == ["delete", "deregister", "update", "create"]
    assert destructive.count("- **delete**") == 125
    assert "and all its data" in destructive
    assert actions[0] == "delete"
    assert actions == sorted(actions, key=["delete", "deregister", "update", "create"].index)
    assert text.index("### Destructive changes") < text.index("### Changes")


def test_cut_note_counts_what_is_left_out() -> None:
    text = render_markdown(mixed_plan(40), max_chars=5_000)

    shown = len(detail_actions(text))
    note = re.search(r"(\d+) change details are not shown", text)

    assert len(text) <= 5_000
    assert note is not None
    assert shown + int(note.group(1)) == 40


def test_small_plan_is_not_cut() -> None:
    drift = [Drift("volume.logs", DriftKind.RESIZED, "vol-0123456789abcdef0", 10, 20, None)]
    plan = mixed_plan(4)

    text = render_markdown(plan, drift)

    assert "cut to stay under" not in text
    assert len(detail_actions(text)) == 4
    assert "### Changed outside volplan" in text
    assert "- `volume.logs` (resized): volume vol-0123456789abcdef0 was resized outside volplan" in text
    assert '- size = "100GB"\n+ size = "200GB"' in text
    assert "<details><summary><b>delete</b> <code>volume.volume-0002</code> (destroys data)</summary>" in text


def test_text_is_escaped() -> None:
    before = record("data")
    plan = Plan(
        [Change("volume.data", Action.DELETE, "gone <script>x</script> | a ``` b", before, None, destroys_data=True)]
    )

    text = render_markdown(plan)

    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "\\| a" in text


def test_values_with_backticks_get_longer_fence() -> None:
    after = record("data", file="odd```name.dstack.yml")
    plan = Plan([Change("volume.data", Action.CREATE, "new", None, after)])

    text = render_markdown(plan)

    assert "````diff" in text


def test_no_changes_has_no_table() -> None:
    text = render_markdown(Plan([]))

    assert "**No changes. Your volumes match the configuration.**" in text
    assert "| Action |" not in text


def test_plan_format_markdown_cli(project: Path, local_root: Path) -> None:
    """250 recorded volumes to delete and 250 new files to create, planned by the CLI."""
    lineage = str(uuid.uuid4())
    resources = [record(f"old-{index:03d}") for index in range(250)]
    state = {"version": 1, "lineage": lineage, "serial": 3, "resources": resources}
    (project / "volplan.state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    for index in range(250):
        volume_file(project, f"new-{index:03d}", size="10GB", region="us-east-1")

    result = run(project, "plan", "-refresh=false", "--format", "markdown")

    assert result.exit_code == 0, result.output
    assert len(result.stdout) < MAX_COMMENT_CHARS
    assert "**Plan: 250 to create, 250 to delete.**" in result.stdout
    assert detail_actions(result.stdout)[0] == "delete"
    # 250 x 100 GB at 0.0952 in eu-central-1 go, 250 x 10 GB at 0.08 in us-east-1 come.
    assert "**Storage cost change:** -$2,180.00 per month" in result.stdout


def test_format_json_equals_json(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    by_flag = run(project, "plan", "--json")
    by_format = run(project, "plan", "--format", "json")

    assert by_flag.exit_code == 0
    assert by_format.stdout == by_flag.stdout
    assert json.loads(by_format.stdout)["format_version"] == "1"


def test_json_and_markdown_conflict(project: Path, local_root: Path) -> None:
    volume_file(project, "data")

    result = run(project, "plan", "--json", "--format", "markdown")

    assert result.exit_code == 1
    assert "Conflicting output formats" in result.stderr
