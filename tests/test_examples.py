"""The examples behave as their READMEs describe, run on copies in scratch folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run

REPOSITORY = Path(__file__).resolve().parent.parent
DSTACK_DOCS = REPOSITORY / "examples" / "dstack-docs"
MADE_UP_IDS = {"existing-aws-volume": "vol1235", "existing-kubernetes-claim": "existing-pvc"}


def copy_example(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("volplan.state.json*"))
    return target


def example_folders() -> list[str]:
    return sorted(path.name for path in DSTACK_DOCS.iterdir() if path.is_dir())


@pytest.mark.parametrize("name", example_folders())
def test_dstack_docs_example(name: str, tmp_path: Path, local_root: Path) -> None:
    folder = copy_example(DSTACK_DOCS / name, tmp_path)
    readme = (folder / "README.md").read_text()

    planned = run(folder, "plan")

    if "Error: Cannot plan" in readme:
        assert planned.exit_code == 1
        for line in filter(None, (line.strip() for line in planned.stderr.splitlines())):
            assert line in readme, f"{name}/README.md does not show: {line}"
        return
    assert planned.exit_code == 0, planned.output
    applied = run(folder, "apply", "-f", "volume.dstack.yml", "-y")
    assert applied.exit_code == 0, applied.output
    assert run(folder, "plan", "--detailed-exitcode").exit_code == 0
    assert len(json.loads(run(folder, "volume", "list", "--json").stdout)["volumes"]) == 1


@pytest.mark.parametrize(
    ("name", "creator"),
    [("existing-aws-volume", "new-aws-volume"), ("existing-kubernetes-claim", "new-kubernetes-volume")],
)
def test_made_up_id_replaced_by_real_one(name: str, creator: str, tmp_path: Path, local_root: Path) -> None:
    maker = copy_example(DSTACK_DOCS / creator, tmp_path)
    user = copy_example(DSTACK_DOCS / name, tmp_path)
    run(maker, "apply", "-f", "volume.dstack.yml", "-y")
    volume_id = json.loads(run(maker, "volume", "get", "my-volume", "--json").stdout)["id"]
    config = user / "volume.dstack.yml"
    config.write_text(config.read_text().replace(MADE_UP_IDS[name], volume_id))

    registered = run(user, "apply", "-f", "volume.dstack.yml", "-y")
    deregistered = run(user, "delete", "-f", "volume.dstack.yml", "-y")

    assert registered.exit_code == 0, registered.output
    assert "1 to register" in registered.stdout
    assert deregistered.exit_code == 0, deregistered.output
    assert "1 to deregister" in deregistered.stdout
    assert (local_root / volume_id).is_dir()


def test_dstack_docs_carry_their_licence() -> None:
    notice = (DSTACK_DOCS / "NOTICE.md").read_text()

    assert "Mozilla Public License" in notice
    assert "https://mozilla.org/MPL/2.0/" in notice


def test_register_example_steps(tmp_path: Path, local_root: Path) -> None:
    folder = copy_example(REPOSITORY / "examples" / "register", tmp_path)
    steps = re.search(r"```sh\n(.*?)```", (folder / "README.md").read_text(), re.S)
    assert steps is not None
    tools = tmp_path / "bin"
    tools.mkdir()
    shim = tools / "volplan"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine "$@"\n')
    shim.chmod(0o755)

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", steps.group(1)],
        cwd=folder,
        env={**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Plan: 1 to register." in result.stdout
    assert "Plan: 1 to deregister." in result.stdout
    assert "Plan: 1 to delete." in result.stdout
    for project in ("maker", "user"):
        assert json.loads((folder / project / "volplan.state.json").read_text())["resources"] == []
    assert not list(local_root.glob("vol-*"))
