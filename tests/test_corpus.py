"""Every configuration of the dstack corpus gets dstack 0.22.5's verdict, except the deliberate
differences, which get volplan's documented verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.config import parse_configuration
from engine.documents import load_document
from engine.dstack_keys import BACKENDS, RUN_KEYS, VOLUME_FIELDS
from engine.errors import ConfigIssue
from engine.nodes import run_nodes
from engine.run_config import RunConfiguration

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
VERDICTS = json.loads((CORPUS / "verdicts.json").read_text())
DIFFERENCES = {
    name: entry
    for name, entry in json.loads((CORPUS / "differences" / "differences.json").read_text()).items()
    if not name.startswith("_")
}

# The field dstack rejects each rejected corpus file for, read from its error message.
DSTACK_REJECTED_FIELD = {
    # "Unable to extract tag using discriminator 'type'"
    "docs__mkdocs__docs__concepts__volumes.md__snippet-06.yml": "type",
    # "Either `commands` or `image` must be set"
    "docs__mkdocs__docs__concepts__volumes.md__snippet-09.yml": "commands",
    "docs__mkdocs__docs__concepts__volumes.md__snippet-10.yml": "commands",
    "docs__mkdocs__docs__concepts__volumes.md__snippet-11.yml": "commands",
}


def check(path: Path) -> tuple[object, list[ConfigIssue]]:
    document, issues = load_document(path.name, path.read_bytes())
    if document is None:
        return None, issues
    config, config_issues = parse_configuration(document)
    return config, issues + config_issues


def test_corpus_is_complete() -> None:
    assert sorted(VERDICTS) == sorted(path.name for path in (CORPUS / "files").iterdir())
    assert sorted(name for name, verdict in VERDICTS.items() if not verdict["accepted"]) == sorted(
        DSTACK_REJECTED_FIELD
    )


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_corpus_file_gets_dstack_verdict(name: str) -> None:
    config, issues = check(CORPUS / "files" / name)

    if VERDICTS[name]["accepted"]:
        assert issues == [], [issue.format() for issue in issues]
        assert config is not None
    else:
        assert config is None
        assert [issue.field for issue in issues] == [DSTACK_REJECTED_FIELD[name]]


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_documented_difference(name: str) -> None:
    entry = DIFFERENCES[name]
    config, issues = check(CORPUS / "differences" / name)

    assert (CORPUS / "files" / entry["derived_from"]).is_file()
    assert entry["dstack"].startswith(("accepted", "crashes"))
    if entry["volplan_field"] is None:
        assert issues == [], [issue.format() for issue in issues]
    else:
        assert [issue.field for issue in issues] == [entry["volplan_field"]]
        assert issues[0].line is not None
        assert issues[0].fix


def test_volplan_template_renders_every_rank() -> None:
    config, _ = check(CORPUS / "differences" / "volplan-template-syntax.yml")

    assert isinstance(config, RunConfiguration)
    names = [node.mounts[0].volume_names for node in run_nodes(config)]
    assert names == [(f"data-volume-{rank}",) for rank in range(8)]
    assert DIFFERENCES["volplan-template-syntax.yml"]["volplan_renders"] == [names[0][0], names[-1][0]]


def test_corpus_dstack_template_renders_every_rank() -> None:
    config, _ = check(CORPUS / "files" / "docs__mkdocs__docs__concepts__volumes.md__snippet-07.yml")

    assert isinstance(config, RunConfiguration)
    assert [node.mounts[0].volume_names for node in run_nodes(config)] == [
        (f"data-volume-{rank}",) for rank in range(8)
    ]


def test_keys_match_dstack() -> None:
    keys = json.loads((CORPUS / "dstack-keys.json").read_text())
    volume_models = {
        name.removesuffix("VolumeConfiguration").lower(): fields for name, fields in keys["volume"].items()
    }

    assert set(keys["backends"]) == BACKENDS
    for kind in RUN_KEYS:
        assert set(keys[kind]) == RUN_KEYS[kind], kind
    assert {backend: set(fields) for backend, fields in volume_models.items()} == {
        backend: set(fields) for backend, fields in VOLUME_FIELDS.items()
    }


def _difference_bullets(markdown: str) -> list[str]:
    section = markdown.split("## Deliberate differences from dstack 0.22.5", 1)[1]
    return [re.sub(r"\s+", " ", bullet).strip() for bullet in section.split("\n- ")[1:]]


def test_difference_lists_in_step() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    readme = (CORPUS / "README.md").read_text()

    assert _difference_bullets(docs) == _difference_bullets(readme)
    assert len(_difference_bullets(docs)) == 9
