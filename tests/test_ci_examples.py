"""The CI examples run: the workflow's volplan steps and the pre-commit hook, on real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import volume_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CI = EXAMPLES / "ci"


@pytest.fixture
def volplan_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a `volplan` that runs this checkout's volplan."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "volplan"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m engine "$@"\n')
    shim.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def workflow_steps(job: str) -> list[str]:
    workflow = yaml.safe_load((CI / "github-workflow.yml").read_text())
    return [step["run"] for step in workflow["jobs"][job]["steps"] if "run" in step]


def test_workflow_jobs_and_triggers() -> None:
    workflow = yaml.safe_load((CI / "github-workflow.yml").read_text())
    plan_steps = workflow_steps("plan")
    apply_steps = workflow_steps("apply")

    assert set(workflow[True]) == {"pull_request", "push"}  # YAML 1.1 reads the key `on` as true
    assert workflow[True]["push"]["branches"] == ["main"]
    assert "pull_request" in workflow["jobs"]["plan"]["if"]
    assert "refs/heads/main" in workflow["jobs"]["apply"]["if"]
    assert "volplan validate" in plan_steps
    assert "volplan plan --format markdown > plan.md" in plan_steps
    assert any(step.startswith("volplan apply --auto-approve") for step in apply_steps)


def test_workflow_plan_steps_run(tmp_path: Path, local_root: Path, volplan_on_path: dict[str, str]) -> None:
    project = tmp_path / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", project)
    steps = [step for step in workflow_steps("plan") if step.startswith("volplan")]

    for step in steps:
        result = subprocess.run(
            ["sh", "-c", step], cwd=project, env=volplan_on_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{step}: {result.stderr}"

    comment = (project / "plan.md").read_text()
    assert comment.startswith("## volplan plan")
    assert "**Plan: 2 to create.**" in comment


def git(repo: Path, environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, env=environment, capture_output=True, text=True, timeout=120)


def test_pre_commit_hook_rejects_invalid(project: Path, volplan_on_path: dict[str, str]) -> None:
    assert git(project, volplan_on_path, "init", "-q").returncode == 0
    hook = project / ".git" / "hooks" / "pre-commit"
    shutil.copy(CI / "pre-commit", hook)
    hook.chmod(0o755)
    volume_file(project, "data", size="-5GB")
    git(project, volplan_on_path, "add", "-A")

    rejected = git(project, volplan_on_path, "commit", "-q", "-m", "Add data")
    volume_file(project, "data", size="5GB")
    git(project, volplan_on_path, "add", "-A")
    accepted = git(project, volplan_on_path, "commit", "-q", "-m", "Add data")

    assert rejected.returncode == 1
    assert "data.dstack.yml" in rejected.stderr
    assert "volplan validate failed" in rejected.stderr
    assert accepted.returncode == 0, accepted.stderr
    assert git(project, volplan_on_path, "log", "--oneline").stdout.count("\n") == 1


def test_pre_commit_hook_skips_other_files(project: Path, volplan_on_path: dict[str, str]) -> None:
    assert git(project, volplan_on_path, "init", "-q").returncode == 0
    hook = project / ".git" / "hooks" / "pre-commit"
    shutil.copy(CI / "pre-commit", hook)
    hook.chmod(0o755)
    volume_file(project, "data", size="-5GB")
    (project / "notes.txt").write_text("not a configuration\n")
    git(project, volplan_on_path, "add", "notes.txt")

    result = git(project, volplan_on_path, "commit", "-q", "-m", "Add notes")

    assert result.returncode == 0, result.stderr


def test_pre_commit_framework_config() -> None:
    config = yaml.safe_load((CI / "pre-commit-config.yaml").read_text())
    hook = config["repos"][0]["hooks"][0]

    assert hook["entry"] == "volplan validate"
    assert hook["pass_filenames"] is False
