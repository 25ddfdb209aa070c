"""Property: whatever mount strings, names, sizes and templates a file holds, loading it raises
nothing but the project's own validation error (ConfigError, made of ConfigIssue)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import parse_configuration
from engine.documents import load_document
from engine.errors import ConfigError, ConfigIssue
from engine.nodes import run_nodes
from engine.project import load_project
from engine.run_config import RunConfiguration

_TEMPLATE_PIECES = st.sampled_from(
    [
        "$<<",
        ">>",
        "${{",
        "}}",
        "$$",
        "$",
        "dstack.node_rank",
        "dstack.job_num",
        "dstack.nodes_num",
        "run.name",
        " ",
        "data",
        "-",
        "+ 1",
        "* 99999",
        "** 99",
        "''.__class__",
        "range(999999)",
        "(",
        ")",
        "{%",
        "/",
        ":",
        "..",
        "é",
    ]
)
TEMPLATES = st.lists(_TEMPLATE_PIECES, max_size=8).map("".join)
NAMES = TEMPLATES | st.text(max_size=45) | st.from_regex(r"[a-z][a-z0-9-]{0,42}", fullmatch=True)
PATHS = st.sampled_from(["/data", "/workflow", "/workflow/x", "relative", "/a/../b", "", "/", "//x", "/d/"]) | st.text(
    max_size=12
)
SIZES = (
    st.integers(min_value=-10, max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.from_regex(r" ?-?[0-9]{0,4}(\.[0-9]{0,3})? ?([MGTmgtP][Bb])? ?", fullmatch=True)
    | st.text(max_size=8)
    | st.none()
)
MOUNTS = st.one_of(
    st.builds(lambda name, path: f"{name}:{path}", NAMES, PATHS),
    st.text(max_size=30),
    st.fixed_dictionaries({"name": NAMES | st.lists(NAMES, max_size=3), "path": PATHS}),
    st.fixed_dictionaries(
        {"instance_path": PATHS, "path": PATHS},
        optional={"optional": st.booleans() | st.text(max_size=4), "name": NAMES},
    ),
    st.integers() | st.none(),
)
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
NODES = st.integers(min_value=-2, max_value=12) | SCALARS
RUNS = st.fixed_dictionaries(
    {"type": st.sampled_from(["task", "service", "dev-environment"]), "volumes": st.lists(MOUNTS, max_size=4)},
    optional={
        "commands": st.lists(st.text(max_size=5), max_size=2) | SCALARS,
        "image": SCALARS,
        "nodes": NODES,
        "name": NAMES,
        "port": SCALARS,
        "stop_duration": SCALARS | st.floats(),
        "replicas": SCALARS
        | st.lists(st.dictionaries(st.sampled_from(["count", "replicas", "commands", "image"]), SCALARS), max_size=2),
        "groups": st.lists(st.dictionaries(st.sampled_from(["name", "nodes", "commands", "gpu"]), NODES), max_size=3)
        | SCALARS,
        "backends": st.lists(st.text(max_size=8), max_size=2) | SCALARS,
    },
)
VOLUMES = st.fixed_dictionaries(
    {"type": st.just("volume"), "name": NAMES, "size": SIZES},
    optional={
        "backend": st.sampled_from(["aws", "gcp", "runpod", "kubernetes", "daytona", "lium", "azure", "awz"]) | SCALARS,
        "region": SCALARS,
        "volume_id": SCALARS,
        "claim_name": SCALARS,
        "auto_cleanup_duration": SCALARS | st.floats(),
        "tags": st.dictionaries(SCALARS, SCALARS, max_size=3) | SCALARS,
        "access_modes": SCALARS | st.lists(SCALARS, max_size=2),
    },
)


def _check_document(data: object) -> None:
    # JSON is YAML, so the generated data reaches the loader as text, as a user's file would.
    text = json.dumps(data, allow_nan=True)
    document, issues = load_document("gen.dstack.yml", text)
    assert all(isinstance(issue, ConfigIssue) for issue in issues)
    if document is None:
        return
    config, more = parse_configuration(document)
    assert all(isinstance(issue, ConfigIssue) for issue in more)
    assert (config is None) == bool(more) or issues
    if isinstance(config, RunConfiguration):
        assert len(run_nodes(config)) == (config.nodes if config.type == "task" else 1)


@settings(max_examples=150, deadline=None)
@given(data=RUNS)
def test_runs_raise_only_config_issues(data: dict[str, object]) -> None:
    _check_document(data)


@settings(max_examples=150, deadline=None)
@given(data=VOLUMES)
def test_volumes_raise_only_config_issues(data: dict[str, object]) -> None:
    _check_document(data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(volume=VOLUMES, task=RUNS)
def test_project_load_raises_only_config_error(
    tmp_path: Path, volume: dict[str, object], task: dict[str, object]
) -> None:
    for index, data in enumerate((volume, task)):
        (tmp_path / f"f{index}.dstack.yml").write_text(json.dumps(data, allow_nan=True))

    try:
        load_project(tmp_path)
    except ConfigError as error:
        assert error.issues
        assert all(isinstance(issue, ConfigIssue) and issue.file for issue in error.issues)
